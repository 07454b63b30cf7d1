"""SafetyFilter, TargetTracker and config validation: pure numpy, no simulator."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware import build_robot
from hardware.robot import RobotState
from hardware.safety import SafetyConfig, SafetyFilter
from hardware.tracking import TargetTracker, TrackingConfig
from toto_robot.action import ActionConvention
from toto_robot.config import CONF_DIR
from toto_robot.rotations import quat_angle, quat_from_rotvec, quat_mul, rotvec_from_quat
from toto_robot.scene import FINGERTIP_BELOW_TCP, FLOOR_GUARD
from toto_robot.spec import EEF_QUAT_REFERENCE

DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # wxyz: gripper pointing down
HOME = np.array([0.45, 0.0, 0.4])


CONV = ActionConvention()  # 0.02 m, 0.04 rad per full-scale step at 10 Hz, lead 0.04 m


def make_filter(action: ActionConvention = CONV, **kw) -> SafetyFilter:
    f = SafetyFilter(SafetyConfig(**kw), action)
    f.reset(HOME, DOWN, gripper_closed=False)
    return f


def act(*xyz, rot=(0, 0, 0), grip=-1.0):
    return np.array([*xyz, *rot, grip], dtype=np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action_refused_and_counted(bad, caplog):
    f = make_filter()
    cmd = f.filter_action(act(bad, 0, 0), HOME)
    assert not cmd.sent and "NaN/inf" in cmd.reason and cmd.gripper is None
    np.testing.assert_array_equal(cmd.target_pos, HOME)  # nothing moved
    assert f.counts["refused"] == 1 and f.counts["sent"] == 0
    assert "refused" in caplog.text
    # The reference is untouched: the next good action continues from HOME.
    cmd = f.filter_action(act(0.5, 0, 0), HOME)
    np.testing.assert_allclose(cmd.target_pos, HOME + [0.01, 0, 0])


def test_wrong_shape_refused():
    cmd = make_filter().filter_action(np.zeros(6), HOME)
    assert not cmd.sent and "shape" in cmd.reason


def test_full_scale_action_is_the_conventions_step_never_cut():
    f = make_filter()
    for a in (act(1, 0, 0), act(0, -1, 0), act(1, 1, 1), act(0, 0, 0, rot=(1, 1, 0))):
        ref_pos, ref_quat = f.ref_pos.copy(), f.ref_quat.copy()
        want_pos, want_quat, _ = CONV.next_target(ref_pos, ref_quat, a, ref_pos)
        cmd = f.filter_action(a, ref_pos)
        assert cmd.sent and cmd.clamps == (), cmd.clamps
        np.testing.assert_allclose(cmd.target_pos, want_pos, atol=1e-12)  # the env's target, exactly
        assert quat_angle(cmd.target_quat, want_quat) < 1e-9
        np.testing.assert_allclose(cmd.action[:6], CONV.to_action(want_pos - ref_pos, rotvec_from_quat(
            quat_mul(want_quat, [ref_quat[0], *-ref_quat[1:]])), 0)[:6], atol=1e-6)


@pytest.mark.parametrize("limit", [{"max_speed": 0.1}, {"max_step_translation": 0.01}, {"max_angular_speed": 0.2},
                                   {"max_step_rotation": 0.02}, {"max_lead": 0.02}])
def test_limits_that_would_cut_a_full_scale_action_are_refused_at_start(limit):
    with pytest.raises(ValueError, match=f"cut a full-scale action.*{next(iter(limit))}"):
        make_filter(**limit)


def test_per_step_limits_bound_absolute_targets():
    f = make_filter(max_step_translation=0.03, max_speed=0.25)
    cmd = f.filter_target(HOME + [0.1, 0, 0], DOWN, None, HOME)
    assert cmd.clamps == ("speed",)
    np.testing.assert_allclose(cmd.target_pos - HOME, [0.025, 0, 0], atol=1e-12)
    np.testing.assert_allclose(cmd.action[:3], [1, 0, 0], atol=1e-6)  # the action actually sent (capped)
    f = make_filter(max_step_translation=0.021, max_speed=1.0)
    cmd = f.filter_target(HOME + [0.1, 0.1, 0], DOWN, None, HOME)
    assert cmd.clamps == ("translation",)
    assert np.linalg.norm(cmd.target_pos - HOME) == pytest.approx(0.021)


def test_out_of_range_action_clipped():
    cmd = make_filter().filter_action(act(3.0, 0, 0), HOME)
    assert "action_range" in cmd.clamps and np.all(np.abs(cmd.action) <= 1)


def test_rotation_limit_and_sent_action_reproduces_target():
    f = make_filter(max_step_rotation=0.1, max_angular_speed=10.0)
    cmd = f.filter_target(HOME, quat_mul(quat_from_rotvec([0, 0, 0.3]), DOWN), None, HOME)  # 0.3 rad about z
    assert "rotation" in cmd.clamps
    assert quat_angle(cmd.target_quat, DOWN) == pytest.approx(0.1, abs=1e-9)
    cmd = f.filter_action(act(0, 0, 0, rot=(0, 0, 0.7)), HOME)
    # The recorded action maps back onto the target through the shared convention.
    rot = quat_from_rotvec(cmd.action[3:6].astype(np.float64) * CONV.max_rotation)
    before = quat_mul(quat_from_rotvec([0, 0, 0.1]), DOWN)
    assert quat_angle(quat_mul(rot, before), cmd.target_quat) < 1e-6


def test_lead_limit_holds_target_near_arm():
    f = make_filter()  # the convention's max_lead (0.04 m) acts first; the safety's (0.06 m) is a second bound
    measured = HOME.copy()  # the arm does not move (blocked): targets may not run away
    for _ in range(5):
        cmd = f.filter_action(act(1, 0, 0), measured)
    assert "lead" in cmd.clamps
    assert np.linalg.norm(cmd.target_pos - measured) == pytest.approx(0.04)


def test_workspace_clip_near_face_refuse_far_outside():
    f = make_filter(workspace_max=[0.75, 0.35, 0.41], max_speed=1.0)
    cmd = f.filter_action(act(0, 0, 1), HOME)  # z 0.4 -> 0.43, 2 cm past the face
    assert cmd.sent and "workspace" in cmd.clamps and cmd.target_pos[2] == pytest.approx(0.41)
    far = f.filter_target(np.array([1.2, 0.0, 0.3]), DOWN, None, HOME)
    assert not far.sent and "outside the workspace" in far.reason
    assert f.counts["refused"] == 1 and f.counts["workspace"] == 1


def test_absolute_target_obeys_step_limits():
    f = make_filter(ActionConvention(max_translation=0.01), max_speed=0.1)
    cmd = f.filter_target(HOME + [0.2, 0, 0], DOWN, None, HOME)
    np.testing.assert_allclose(cmd.target_pos, HOME + [0.01, 0, 0])
    assert cmd.clamps == ("speed",)
    assert not f.filter_target(HOME, np.array([np.nan, 0, 0, 1.0]), None, HOME).sent


def test_gripper_debounce_and_min_interval():
    f = make_filter(gripper_debounce_steps=2, gripper_min_interval_s=0.5)
    c = f.filter_action(act(0, 0, 0, grip=1.0), HOME, now=10.0)
    assert c.gripper is None and c.gripper_debounced and c.action[6] == -1  # held open
    c = f.filter_action(act(0, 0, 0, grip=1.0), HOME, now=10.1)
    assert c.gripper == "close" and c.action[6] == 1
    c = f.filter_action(act(0, 0, 0, grip=1.0), HOME, now=10.2)
    assert c.gripper is None and not c.gripper_debounced  # no re-sending while closed
    # A flicker back to open is held for two steps and 0.5 s since the last change.
    for now in (10.3, 10.4, 10.5):
        c = f.filter_action(act(0, 0, 0, grip=-1.0), HOME, now=now)
        assert c.gripper is None and c.gripper_debounced
    c = f.filter_action(act(0, 0, 0, grip=-1.0), HOME, now=10.7)
    assert c.gripper == "open"
    assert f.counts["gripper_debounced"] == 4


def test_clamp_rate_counts():
    f = make_filter(workspace_max=[0.75, 0.35, 0.41])
    f.filter_action(act(0, 0, 1), HOME)  # 2 cm up: 1 cm through the box's ceiling
    f.filter_action(act(0.1, 0, 0), HOME)
    assert f.clamp_rate == pytest.approx(0.5)


def test_filter_needs_reference_and_config_validated():
    f = SafetyFilter(SafetyConfig(), CONV)
    with pytest.raises(RuntimeError, match="reference"):
        f.filter_action(act(0, 0, 0), HOME)
    with pytest.raises(ValueError, match="workspace_min"):
        SafetyConfig(workspace_min=[0.5, 0, 0], workspace_max=[0.4, 1, 1])
    with pytest.raises(ValueError, match="positive"):
        SafetyConfig(max_speed=0.0)


def test_rotvec_quat_round_trip():
    rng = np.random.default_rng(0)
    for v in rng.normal(size=(20, 3)):
        v = v / np.linalg.norm(v) * rng.uniform(0, 3.0)
        np.testing.assert_allclose(rotvec_from_quat(quat_from_rotvec(v)), v, atol=1e-9)


def test_tracker_smooth_plan_carries_stream_velocity():
    tr = TargetTracker(TrackingConfig(velocity_filter=1.0), period_s=0.1)
    tr.reset(HOME, DOWN)
    plan = tr.plan(HOME + [0.01, 0, 0], DOWN)
    reach, brake = plan.waypoints
    np.testing.assert_allclose(reach.lin_vel, [0.1, 0, 0])
    assert reach.min_time_s == pytest.approx(0.1)
    np.testing.assert_allclose(brake.pos, reach.pos)  # brake_time 0: settle on the target
    assert not np.any(brake.lin_vel)
    naive = TargetTracker(TrackingConfig(mode="naive"), 0.1)
    (only,) = naive.plan(HOME, DOWN).waypoints
    assert not np.any(only.lin_vel) and only.min_time_s is None


def test_tracker_no_outward_velocity_on_box_face():
    hi = np.array([0.75, 0.35, 0.41])
    tr = TargetTracker(TrackingConfig(velocity_filter=1.0, brake_time_s=0.2), 0.1, bounds=(np.zeros(3), hi))
    tr.reset(HOME, DOWN)
    reach, brake = tr.plan(np.array([0.46, 0.0, 0.41]), DOWN).waypoints
    assert reach.lin_vel[2] == 0 and reach.lin_vel[0] > 0
    assert np.all(brake.pos <= hi)


def test_tracker_slows_towards_the_floor_guard_so_it_cannot_overshoot_it():
    # Descending at full speed onto a grasp just above the floor guard: passing that target at
    # 0.2 m/s would carry the hand ~8 mm further (v^2 / 2a at 2.6 m/s^2), below the guard.
    lo = np.array([0.25, -0.35, FLOOR_GUARD])
    tr = TargetTracker(TrackingConfig(velocity_filter=1.0), 0.1, bounds=(lo, np.array([0.75, 0.35, 0.65])))
    tr.reset(np.array([0.5, 0.0, 0.035]), DOWN)
    reach, _ = tr.plan(np.array([0.5, 0.0, FLOOR_GUARD + 0.0005]), DOWN).waypoints  # 2 cm down in one step
    overshoot = reach.lin_vel[2] ** 2 / (2 * 2.6)  # the planner's braking at relative_dynamics_factor 0.2
    assert -0.2 < reach.lin_vel[2] < 0 and overshoot < 0.0005
    up, _ = tr.plan(np.array([0.5, 0.0, FLOOR_GUARD + 0.0205]), DOWN).waypoints  # away from the floor: not capped
    assert up.lin_vel[2] == pytest.approx(0.2)


def test_tracking_config_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        TrackingConfig(mode="jerky")


def compose_deploy(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("deploy_policy", overrides=list(overrides))


def test_conf_groups_build_a_robot_and_reject_typos():
    cfg = compose_deploy("robot=franky")
    robot_cfg, safety_cfg = cfg.robot, cfg.safety
    robot = build_robot(robot_cfg, safety_cfg)  # not connected: no network needed
    assert robot.config.tracking.mode == "smooth" and robot.safety.config.max_speed == 0.25
    assert not robot.is_connected
    with pytest.raises(Exception, match="max_sped"):
        build_robot(robot_cfg, OmegaConf.merge(safety_cfg, {"max_sped": 1.0}))
    with pytest.raises(KeyError, match="unknown robot"):
        build_robot(OmegaConf.merge(robot_cfg, {"backend": "kuka"}))


def test_panda_config_has_the_panda_joint_limits():
    cfg = compose_deploy("robot=franky_panda").robot
    robot = build_robot(cfg)
    assert robot.config.joint_upper[6] == pytest.approx(2.8973) and robot.config.host == "172.16.0.2"
    with pytest.raises(ValueError, match="home_joints"):
        build_robot(OmegaConf.merge(cfg, {"home_joints": [0, 0, 0, 0, 0, 0, 0]}))  # joint 4 must be < -0.07


def test_tracker_measures_the_period_on_the_controller_clock():
    tr = TargetTracker(TrackingConfig(velocity_filter=1.0), period_s=0.1)
    tr.reset(HOME, DOWN)
    tr.plan(HOME, DOWN, t=5.0)
    reach, _ = tr.plan(HOME + [0.01, 0, 0], DOWN, t=5.15).waypoints  # the loop ran 50 ms late
    assert reach.min_time_s == pytest.approx(0.15)
    np.testing.assert_allclose(reach.lin_vel, [0.01 / 0.15, 0, 0])
    reach, _ = tr.plan(HOME + [0.02, 0, 0], DOWN, t=9.0).waypoints  # a long gap is clipped to 2 periods
    assert reach.min_time_s == pytest.approx(0.2)


def test_orientation_kept_within_max_tilt_of_nominal():
    f = make_filter(max_tilt=0.5)
    for _ in range(20):  # 0.04 rad per step about base x: 0.8 rad asked for
        cmd = f.filter_action(act(0, 0, 0, rot=(1, 0, 0)), HOME)
    assert "tilt" in cmd.clamps and f.counts["tilt"] >= 7
    assert quat_angle(cmd.target_quat, DOWN) == pytest.approx(0.5, abs=1e-6)
    back = f.filter_action(act(0, 0, 0, rot=(-1, 0, 0)), HOME)  # turning back is not clamped
    assert "tilt" not in back.clamps and quat_angle(back.target_quat, DOWN) == pytest.approx(0.46, abs=1e-6)


def test_tilted_reference_is_not_yanked_back():
    f = make_filter(max_tilt=0.3)
    tilted = quat_mul(quat_from_rotvec([0.8, 0, 0]), DOWN)  # the arm was left tilted by 0.8 rad
    f.reset(HOME, tilted)
    cmd = f.filter_action(act(0, 0, 0, rot=(1, 0, 0)), HOME)  # further out: held at 0.8
    assert quat_angle(cmd.target_quat, tilted) < 1e-6 and "tilt" in cmd.clamps
    cmd = f.filter_action(act(0, 0, 0, rot=(-1, 0, 0)), HOME)  # back in: one full-scale step
    assert quat_angle(cmd.target_quat, tilted) == pytest.approx(CONV.max_rotation, abs=1e-6)


def test_bad_nominal_quat_or_tilt_rejected():
    with pytest.raises(ValueError, match="nominal_quat"):
        SafetyConfig(nominal_quat=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="max_tilt"):
        SafetyConfig(max_tilt=0.0)


def test_wrist_kept_within_reach_of_the_shoulder():
    # Far and low is inside the box but out of the arm's reach: the target stops at max_reach.
    f = make_filter(max_reach=0.6, max_speed=1.0)
    f.reset(np.array([0.5, 0.0, 0.2]), DOWN)
    assert f.reach(f.ref_pos, DOWN) < 0.6
    for _ in range(20):
        cmd = f.filter_action(act(0.6, 0, -0.6), f.ref_pos)  # the arm keeps up
    assert "reach" in cmd.clamps
    assert f.reach(cmd.target_pos, cmd.target_quat) == pytest.approx(0.6, abs=1e-6)
    back = f.filter_action(act(-0.6, 0, 0.6), cmd.target_pos)  # moving back in is not clamped
    assert "reach" not in back.clamps and f.reach(back.target_pos, DOWN) < 0.6


def test_yaw_kept_within_max_yaw_of_the_arm_azimuth():
    # Yaw (about the vertical) is a twist, not a tilt: it has its own bound, relative to the
    # direction the arm points in (joint 7 counter-rotates by exactly that relative yaw).
    f = make_filter(max_yaw=0.6)
    for _ in range(20):  # 0.04 rad per step about base z: 0.8 rad asked for
        cmd = f.filter_action(act(0, 0, 0, rot=(0, 0, 1)), HOME)
    assert "yaw" in cmd.clamps and "tilt" not in cmd.clamps
    tilt, yaw = f.orientation(cmd.target_pos, cmd.target_quat)
    assert tilt == pytest.approx(0.0, abs=1e-6) and abs(yaw) == pytest.approx(0.6, abs=1e-6)
    # Off to the side the arm's azimuth turns with it: the same absolute yaw is a smaller relative one.
    side = np.array([0.45, 0.3, 0.4])
    az = np.arctan2(side[1], side[0])
    g = make_filter(max_yaw=0.6)
    g.reset(side, quat_mul(quat_from_rotvec([0, 0, az]), DOWN))
    assert g.orientation(side, g.ref_quat) == pytest.approx((0.0, 0.0), abs=1e-6)


def test_tilt_and_yaw_limits_together_keep_the_unclamped_part():
    f = make_filter(max_tilt=0.3, max_yaw=0.5, max_angular_speed=20.0, max_step_rotation=2.0)
    q = quat_mul(quat_from_rotvec([0, 0, 0.4]), quat_mul(quat_from_rotvec([0.9, 0, 0]), DOWN))  # tilt 0.9, yaw 0.4
    cmd = f.filter_target(HOME, q, None, HOME)
    assert "tilt" in cmd.clamps and "yaw" not in cmd.clamps
    tilt, yaw = f.orientation(HOME, cmd.target_quat)
    assert tilt == pytest.approx(0.3, abs=1e-6) and yaw == pytest.approx(0.4, abs=1e-6)


def test_wrist_kept_off_the_folded_elbow():
    # Near the base and low folds the elbow onto its joint limit: the target stops at min_reach.
    f = make_filter(min_reach=0.35, max_speed=1.0)
    f.reset(np.array([0.45, 0.0, 0.2]), DOWN)
    for _ in range(20):
        cmd = f.filter_action(act(-0.6, 0, -0.3), f.ref_pos)
    assert "reach" in cmd.clamps
    assert f.reach(cmd.target_pos, cmd.target_quat) == pytest.approx(0.35, abs=1e-6)
    with pytest.raises(ValueError, match="min_reach"):
        SafetyConfig(min_reach=0.8)


def test_floor_guard_is_the_box_floor_and_admits_every_demo_grasp():
    # A 4 cm cube is grasped with the TCP 2.5 cm under its top, i.e. 1.5 cm above the table: the
    # old 5 cm box floor clipped every grasp; the floor guard keeps the fingertips 6 mm clear.
    f = make_filter()
    assert f.config.workspace_min[2] == FLOOR_GUARD == pytest.approx(FINGERTIP_BELOW_TCP + 0.006)
    f.reset(np.array([0.5, 0.0, 0.056]), DOWN)
    cmds = [f.filter_action(act(0, 0, -1), f.ref_pos) for _ in range(3)]  # full scale down: 2 cm a step
    assert [c.clamps for c in cmds[:2]] == [(), ()] and cmds[1].target_pos[2] == pytest.approx(0.016)
    assert cmds[2].target_pos[2] == pytest.approx(FLOOR_GUARD) and cmds[2].clamps == ("workspace",)


def test_observed_eef_quat_is_continuous_through_the_home_orientation():
    # Tilting through pointing down, w crosses 0: the robot's w >= 0 quaternion flips sign there.
    quats = [quat_mul(quat_from_rotvec([a, 0, 0]), DOWN) for a in np.linspace(-0.3, 0.3, 31)]
    raw = np.array([q if q[0] >= 0 else -q for q in quats])
    assert np.linalg.norm(np.diff(raw, axis=0), axis=1).max() > 1.5  # the flip
    obs = [RobotState(joint_pos=np.zeros(7), joint_vel=np.zeros(7), eef_pos=HOME, eef_quat=q, eef_vel=np.zeros(6),
                      gripper_width=0.08, t_device=0.0, t_host=0.0).as_obs()["eef_quat"] for q in raw]
    assert np.linalg.norm(np.diff(obs, axis=0), axis=1).max() < 0.02
    assert all(np.dot(q, EEF_QUAT_REFERENCE) > 0 for q in obs)

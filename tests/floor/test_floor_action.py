"""The shared action convention: scales, caps, lead bound, canonical quaternion sign, refusal."""

import numpy as np
import pytest

from toto_robot.action import ActionConvention, ActionConventionError, check_convention
from toto_robot.rotations import quat_angle, quat_canonical
from toto_robot.spec import EEF_QUAT_REFERENCE

DOWN = np.array(EEF_QUAT_REFERENCE)


def test_full_scale_is_one_step_in_every_direction():
    c = ActionConvention(max_translation=0.02, max_rotation=0.1)
    for a in ([1, 0, 0], [0, -1, 0], [1, 1, 1], [0.5, 0.5, 0]):
        pos, quat, close = c.next_target(np.zeros(3), DOWN, np.array([*a, 0, 0, 0, -1.0]), np.zeros(3))
        want = min(np.linalg.norm(a), 1.0) * 0.02
        assert np.linalg.norm(pos) == pytest.approx(want) and not close
    _, quat, close = c.next_target(np.zeros(3), DOWN, np.array([0, 0, 0, 1, 1, 0, 1.0]), np.zeros(3))
    assert quat_angle(quat, DOWN) == pytest.approx(0.1) and close


def test_target_integrates_on_previous_target_and_lead_is_bounded():
    c = ActionConvention(max_translation=0.02, max_lead=0.04)
    ref = np.zeros(3)
    for _ in range(5):  # the arm does not move: the target stops max_lead ahead of it
        ref, _, _ = c.next_target(ref, DOWN, np.array([1, 0, 0, 0, 0, 0, 0.0]), np.zeros(3))
    assert ref[0] == pytest.approx(0.04)
    pos, _, _ = c.next_target(np.array([0.01, 0, 0]), DOWN, np.array([1, 0, 0, 0, 0, 0, 0.0]), np.array([0.01, 0, 0]))
    assert pos[0] == pytest.approx(0.03)  # on the previous target, not on the measured pose


def test_to_action_inverts_step():
    c = ActionConvention()
    a = c.to_action(np.array([0.01, -0.005, 0.0]), np.array([0.0, 0.0, 0.03]), -1.0)
    delta, rotvec, close = c.step(a)
    np.testing.assert_allclose(delta, [0.01, -0.005, 0.0], atol=1e-7)
    np.testing.assert_allclose(rotvec, [0, 0, 0.03], atol=1e-7)
    assert not close


def test_other_or_missing_convention_is_refused_with_the_difference():
    c = ActionConvention()
    check_convention(c.to_dict(), c, "store x")
    with pytest.raises(ActionConventionError, match="store x.*max_translation: recorded 0.05"):
        check_convention({**c.to_dict(), "max_translation": 0.05}, c, "store x")
    with pytest.raises(ActionConventionError, match="records no action convention"):
        check_convention(None, c, "store x")
    assert ActionConvention.from_dict(c.to_dict()) == c
    with pytest.raises(ActionConventionError, match="unknown"):
        ActionConvention.from_dict({**c.to_dict(), "frame": "tool"})


def test_canonical_quaternion_is_continuous_through_w_zero():
    # Yawing the pointing-down hand through the home orientation: w crosses 0, the sign must not flip.
    quats = []
    for yaw in np.linspace(-1.0, 1.0, 41):
        q = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
        w1, x1, y1, z1 = q
        down = np.array([-x1, w1, z1, -y1])  # q * (0, 1, 0, 0)
        quats.append(quat_canonical(-down if yaw > 0 else down, DOWN))
    steps = np.linalg.norm(np.diff(quats, axis=0), axis=1)
    assert steps.max() < 0.06

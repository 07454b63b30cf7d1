"""The robot-side task-done check (toto_robot.scene.held_and_lifted): a held cube lifted clear of the
table ends a rollout; closing on air, a low hand, an open gripper or moving fingers do not."""

import pytest

from toto_robot.scene import CUBE_SIZE_RANGE, HAND_OPEN_WIDTH, HELD_LIFT_Z, LIFT_HEIGHT, held_and_lifted


# edge-on, and a 6 cm cube yawed 30 degrees gripped across its corners (measured on franky-sim: 7.5 cm)
@pytest.mark.parametrize("width", [*CUBE_SIZE_RANGE, 0.075])
def test_a_held_cube_lifted_clear_is_done(width):
    assert held_and_lifted(HELD_LIFT_Z + 0.01, width, width + 0.001, closing=True)


@pytest.mark.parametrize("tcp_z, width, previous, closing, why", [
    (0.2, 0.0, 0.0, True, "closed on air"),
    (0.2, HAND_OPEN_WIDTH, HAND_OPEN_WIDTH, True, "fingers not yet moving after the close command"),
    (0.2, 0.05, 0.05, False, "gripper commanded open"),
    (0.2, 0.05, 0.06, True, "fingers still closing through a cube's width"),
    (LIFT_HEIGHT, 0.05, 0.05, True, "hand too low for any cube's bottom to be lifted"),
])
def test_not_done(tcp_z, width, previous, closing, why):
    assert not held_and_lifted(tcp_z, width, previous, closing), why


def test_the_height_lifts_any_task_cube_gripped_anywhere():
    # A cube gripped at its top edge hangs a full edge below the TCP: its bottom is still lifted.
    assert HELD_LIFT_Z - max(CUBE_SIZE_RANGE) >= LIFT_HEIGHT

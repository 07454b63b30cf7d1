"""Cameras: pyrealsense2 software devices and SDK recordings through the project's camera class."""

from __future__ import annotations

import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from hardware.camera import CameraError, CameraFrame, StaleFrameError, SyntheticCamera, SyntheticCameraConfig, build_camera, to_observation
from hardware.realsense import RealSenseCamera, RealSenseConfig
from hardware.realsense_software import SoftwareRealSense
from toto_robot.preprocess import prepare_image


def _index(frame: CameraFrame) -> int:
    return int(frame.color[0, 0, 0]) + 256 * int(frame.color[0, 0, 1])


def test_software_device_frames_timestamps_and_settings(software_camera):
    sw, feeder = software_camera
    cfg = RealSenseConfig(width=160, height=120, fps=30, warmup_frames=5, exposure_us=300.0, white_balance_k=5000.0)
    with sw.camera(cfg, name="agentview_image") as cam:
        assert cam.frames_discarded >= 5  # the first frames after start are never served
        frames = [cam.read(timeout_s=1.0) for _ in range(10)]
        meta = cam.metadata()
    numbers = [f.frame_number for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == 10
    for f in frames:
        assert f.color.shape == (120, 160, 3) and f.color.dtype == np.uint8
        assert _index(f) == f.frame_number % 65536  # pixels arrive unaltered (RGB order, no copy reuse)
        assert f.t_device == pytest.approx(f.frame_number / 30, abs=1e-6)  # device clock passes through
    host = np.array([f.t_host for f in frames])
    assert np.all(np.diff(host) > 0) and host[-1] <= time.monotonic()
    # reads wait for the next frame: never faster than the feeder's 30 fps (slower when a loaded
    # machine holds up the feeder thread)
    assert np.mean(np.diff(host)) > 0.5 / 30
    assert meta["serial"] == "SW123456" and meta["color"]["width"] == 160 and meta["color"]["fps"] == 30
    assert meta["color"]["intrinsics"]["fx"] == 600.0
    # auto modes off and the explicit values set on the device are what is recorded
    assert meta["sensor_settings"] == {
        "enable_auto_exposure": 0.0, "enable_auto_white_balance": 0.0, "exposure": 300.0, "gain": 64.0, "white_balance": 5000.0,
    }


def test_read_latest_goes_stale_when_the_camera_stops(software_camera):
    sw, feeder = software_camera
    with sw.camera(RealSenseConfig(width=160, height=120, warmup_frames=2)) as cam:
        fresh = cam.read_latest(max_age_ms=100)
        assert fresh.age_ms() < 100
        feeder.stop()
        time.sleep(0.25)
        with pytest.raises(StaleFrameError, match="ms old"):
            cam.read_latest(max_age_ms=100)
        cam.read(timeout_s=0.1)  # the newest frame, not yet returned by read()
        with pytest.raises(StaleFrameError, match="no new frame"):
            cam.read(timeout_s=0.1)


def test_recording_plays_back_through_the_camera_class(tmp_path, indexed_frame):
    sw = SoftwareRealSense(width=96, height=72, fps=30, serial="REC00001")
    path = sw.record(tmp_path / "cam.db3", [indexed_frame(i, 72, 96) for i in range(40)])
    cfg = RealSenseConfig(width=96, height=72, playback_file=str(path), warmup_frames=3)
    with RealSenseCamera(cfg, name="wrist_image") as cam:
        frames = []
        while True:
            try:
                frames.append(cam.read(timeout_s=0.5))
            except StaleFrameError:
                break
        meta = cam.metadata()
    assert meta["serial"] == "REC00001" and meta["playback_file"] == str(path)
    assert meta["color"]["intrinsics"]["ppx"] == 48.0
    assert len(frames) >= 20
    for f in frames:
        assert f.color.shape == (72, 96, 3)
        assert _index(f) == f.frame_number  # each frame's pixels belong to its own frame number
        assert f.t_device == pytest.approx(f.frame_number / 30, abs=1e-3)
    assert all(b.frame_number > a.frame_number for a, b in zip(frames, frames[1:]))


def test_missing_recording_is_a_clear_error(tmp_path):
    cam = RealSenseCamera(RealSenseConfig(playback_file=str(tmp_path / "none.db3")))
    with pytest.raises(CameraError, match="none.db3"):
        cam.connect()


def test_preprocessing_parity_with_sim(software_camera, indexed_frame):
    """A camera frame becomes a policy image through the very function sim observations use."""
    sw, _ = software_camera
    with sw.camera(RealSenseConfig(width=160, height=120, warmup_frames=2)) as cam:
        frame = cam.read(timeout_s=1.0)
    obs = to_observation(frame, 64)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, prepare_image(frame.color, 64))
    # centre crop of 160x120 is columns 20..140: the B gradient of the crop, area-resized
    expected_b = prepare_image(indexed_frame(0, 120, 160), 64)[..., 2]
    np.testing.assert_array_equal(obs[..., 2], expected_b)
    # a sim frame rendered at the policy size passes through unchanged
    sim = indexed_frame(7, 64, 64)
    assert prepare_image(sim, 64) is sim


def test_camera_config_validation():
    good = OmegaConf.create({"type": "synthetic", "width": 32, "height": 24, "fps": 30})
    cam = build_camera("agentview_image", good)
    assert isinstance(cam, SyntheticCamera) and cam.config.width == 32
    with pytest.raises(Exception, match="exposure_ms"):
        build_camera("x", OmegaConf.create({"type": "realsense", "exposure_ms": 3}))
    with pytest.raises(KeyError, match="unknown camera 'kinect'"):
        build_camera("x", {"type": "kinect"})
    with pytest.raises(CameraError, match="needs a 'type'"):
        build_camera("x", {"width": 3})


def test_synthetic_camera_stops_delivering():
    cfg = SyntheticCameraConfig(width=32, height=24, fps=30, warmup_frames=1, stop_after_s=0.3)
    with SyntheticCamera(cfg) as cam:
        assert cam.read_latest(100).color.shape == (24, 32, 3)
        time.sleep(0.5)
        with pytest.raises(StaleFrameError):
            cam.read_latest(100)

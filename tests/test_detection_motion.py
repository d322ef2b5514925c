"""Motion algorithm on synthetic numpy frames: noise, light changes, moving blocks, zones."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from custom_components.lightnvr.detection import Box
from custom_components.lightnvr.detection.motion import (
    MotionDetector,
    MotionOptions,
    MotionResult,
    box_blur,
    build_mask,
)

H, W = 180, 320
FPS = 5.0


def scene(seed: int = 1) -> np.ndarray:
    """A textured still picture (float): gradient plus smoothed random texture."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(40, 200, W)[None, :].repeat(H, axis=0)
    texture = box_blur(rng.uniform(-40, 40, (H, W)), 3)
    return gradient + texture


def to_frame(image: np.ndarray, rng: np.random.Generator, noise: float = 2.0) -> np.ndarray:
    noisy = image + rng.normal(0.0, noise, image.shape) if noise else image
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def feed(
    detector: MotionDetector, frames: Iterator[np.ndarray], start: float = 0.0
) -> list[MotionResult]:
    return [detector.process(frame, start + i / FPS) for i, frame in enumerate(frames)]


def with_block(
    image: np.ndarray, x: int, y: int, size: int = 24, value: float = 250.0
) -> np.ndarray:
    out = image.copy()
    out[y : y + size, x : x + size] = value
    return out


def test_box_blur_matches_a_naive_mean() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    radius = 2
    padded = np.pad(image.astype(np.float64), radius, mode="edge")
    naive = np.zeros(image.shape)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            naive[y, x] = padded[y : y + 5, x : x + 5].mean()
    np.testing.assert_allclose(box_blur(image, radius), naive, atol=1e-3)
    assert box_blur(image, 0).dtype == np.float32


@pytest.mark.parametrize("noise", [2.0, 6.0, 15.0])
def test_static_scene_with_sensor_noise_never_moves(noise: float) -> None:
    """Per-frame noise, even heavy night-time noise, is not motion."""
    rng = np.random.default_rng(7)
    image = scene()
    detector = MotionDetector()
    results = feed(detector, (to_frame(image, rng, noise) for _ in range(150)))
    assert not any(r.motion or r.triggered for r in results)
    assert max(r.fraction for r in results) < 0.001


def test_heavy_noise_raises_the_threshold() -> None:
    """The threshold adapts to the measured noise instead of flooding the mask."""
    rng = np.random.default_rng(8)
    image = scene()
    quiet = feed(MotionDetector(), (to_frame(image, rng, 1.0) for _ in range(10)))
    noisy = feed(MotionDetector(), (to_frame(image, rng, 40.0) for _ in range(10)))
    assert noisy[-1].threshold > quiet[-1].threshold
    assert quiet[-1].threshold == MotionOptions().base_threshold


def test_slow_brightness_ramp_is_not_motion() -> None:
    """Dawn, clouds, auto-exposure: 60 grey levels up over 30 s, then down again."""
    rng = np.random.default_rng(11)
    image = scene()
    ramp = [*np.linspace(0, 60, 150), *np.linspace(60, 0, 150)]
    results = feed(MotionDetector(), (to_frame(image + level, rng) for level in ramp))
    assert not any(r.motion for r in results)
    assert max(r.fraction for r in results) < 0.002


def test_sudden_light_change_reseeds_instead_of_motion() -> None:
    """A day/night switch changes (nearly) every pixel at once: a scene change, not motion."""
    rng = np.random.default_rng(12)
    image = scene()
    other = 255.0 - image  # the same scene, but no pixel keeps its grey level
    detector = MotionDetector()
    results = feed(detector, (to_frame(image, rng) for _ in range(20)))
    results += feed(detector, (to_frame(other, rng) for _ in range(20)), start=4.0)
    assert any(r.scene_change for r in results)
    assert detector.scene_changes == 1
    assert not any(r.motion for r in results)


def moving_block_frames(
    image: np.ndarray, rng: np.random.Generator, still: int, moving: int, *, y: int = 70
) -> Iterator[np.ndarray]:
    for _ in range(still):
        yield to_frame(image, rng)
    for i in range(moving):
        yield to_frame(with_block(image, 20 + 8 * i, y), rng)


def test_moving_block_turns_motion_on_then_off_after_cooldown() -> None:
    rng = np.random.default_rng(5)
    image = scene()
    detector = MotionDetector(MotionOptions(cooldown=1.0, trigger_frames=2))
    still, moving = 25, 20
    results = feed(detector, moving_block_frames(image, rng, still, moving))
    # Before the block appears: nothing.
    assert not any(r.motion or r.triggered for r in results[:still])
    # The first moving frame triggers; the second confirms (trigger_frames=2).
    assert results[still].triggered
    assert not results[still].motion
    assert results[still + 1].motion
    assert all(r.motion for r in results[still + 1 :])
    # The box surrounds the block (its current place, plus where it just was).
    box = results[still + 10].box
    assert box is not None
    block_x = (20 + 8 * 10) / W
    assert box.x_min <= block_x <= box.x_max
    assert box.y_min <= 70 / H < (70 + 24) / H <= box.y_max + 0.02
    assert box.x_max - box.x_min < 0.5
    # The block leaves: motion holds through the cool-down, then ends.
    after = feed(detector, (to_frame(image, rng) for _ in range(40)), start=(still + moving) / FPS)
    ended = next(i for i, r in enumerate(after) if not r.motion)
    last_trigger = max((i for i, r in enumerate(after) if r.triggered), default=-1)
    assert (ended - last_trigger) / FPS >= 1.0 - 1e-9
    assert not any(r.motion for r in after[ended:])


def test_a_single_glitch_frame_is_not_motion() -> None:
    """One odd frame (decoder hiccup) never confirms motion with trigger_frames=2."""
    rng = np.random.default_rng(6)
    image = scene()
    frames = [to_frame(image, rng) for _ in range(20)]
    frames[10] = to_frame(with_block(image, 100, 60, size=60), rng)
    results = feed(MotionDetector(), iter(frames))
    assert results[10].triggered
    assert not any(r.motion for r in results)


def test_cooldown_bridges_a_short_pause() -> None:
    rng = np.random.default_rng(9)
    image = scene()
    detector = MotionDetector(MotionOptions(cooldown=2.0))
    frames = list(moving_block_frames(image, rng, 10, 10))
    # The block stands still for 3 frames (0.6 s) and moves on.
    frames += [to_frame(with_block(image, 20 + 8 * 9, 70), rng)] * 3
    frames += [to_frame(with_block(image, 100 + 8 * i, 70), rng) for i in range(10)]
    results = feed(detector, iter(frames))
    first_on = next(i for i, r in enumerate(results) if r.motion)
    assert all(r.motion for r in results[first_on:])


def test_stopped_object_fades_into_the_background() -> None:
    """A parked car is not motion forever."""
    rng = np.random.default_rng(10)
    image = scene()
    parked = with_block(image, 150, 60, size=40)
    detector = MotionDetector()
    results = feed(detector, moving_block_frames(image, rng, 10, 10))
    results += feed(detector, (to_frame(parked, rng) for _ in range(400)), start=4.0)
    assert any(r.motion for r in results)
    assert not results[-1].motion
    assert not any(r.triggered for r in results[-20:])


def test_small_changes_below_min_area_are_ignored() -> None:
    rng = np.random.default_rng(13)
    image = scene()
    frames = [to_frame(image, rng) for _ in range(10)]
    frames += [to_frame(with_block(image, 20 + 4 * i, 70, size=4), rng) for i in range(20)]
    results = feed(MotionDetector(MotionOptions(min_area=0.01)), iter(frames))
    assert not any(r.motion for r in results)
    # The same change counts with a smaller minimum area.
    results = feed(MotionDetector(MotionOptions(min_area=0.0005)), iter(frames))
    assert any(r.motion for r in results)


def test_sensitivity_decides_about_faint_contrast() -> None:
    rng = np.random.default_rng(14)
    image = scene()
    frames = [to_frame(image, rng) for _ in range(10)]
    frames += [
        to_frame(with_block(image, 20 + 8 * i, 70, size=40, value=0) * 0 + image + _patch(i), rng)
        for i in range(20)
    ]
    low = feed(MotionDetector(MotionOptions(sensitivity=10)), iter(frames))
    high = feed(MotionDetector(MotionOptions(sensitivity=90)), iter(frames))
    assert not any(r.motion for r in low)
    assert any(r.motion for r in high)


def _patch(i: int) -> np.ndarray:
    """A faint (+18 grey levels) 40 px square moving right."""
    out = np.zeros((H, W))
    x = 20 + 8 * i
    out[70:110, x : x + 40] = 18.0
    return out


@pytest.mark.parametrize("use_mask", [False, True])
def test_exclusion_zone_ignores_motion_inside_only(use_mask: bool) -> None:
    """A swaying tree in an excluded rectangle is ignored; a person elsewhere is not."""
    rng = np.random.default_rng(15)
    image = scene()
    zone = Box(0.0, 0.0, 0.5, 1.0)  # the left half
    if use_mask:
        mask = np.zeros((9, 16), dtype=bool)  # any resolution; scaled to the frame
        mask[:, :8] = True
        options = MotionOptions(exclude_mask=mask)
    else:
        options = MotionOptions(exclude=(zone,))
    inside = [to_frame(image, rng) for _ in range(10)]
    inside += [to_frame(with_block(image, 10 + 5 * i, 70), rng) for i in range(20)]  # x < 130
    results = feed(MotionDetector(options), iter(inside))
    assert not any(r.motion or r.triggered for r in results)

    outside = [to_frame(image, rng) for _ in range(10)]
    outside += [to_frame(with_block(image, 180 + 5 * i, 70), rng) for i in range(20)]
    results = feed(MotionDetector(options), iter(outside))
    assert any(r.motion for r in results)
    boxes = [r.box for r in results if r.box is not None]
    assert boxes
    assert all(b.x_min >= 0.5 for b in boxes)


def test_build_mask_combines_zones_and_mask() -> None:
    mask = np.zeros((2, 2), dtype=bool)
    mask[1, 1] = True  # bottom-right quarter
    watched = build_mask((10, 20), (Box(0.0, 0.0, 0.25, 0.5),), mask)
    assert not watched[:5, :5].any()
    assert not watched[5:, 10:].any()
    assert watched[:5, 5:].all()
    assert watched[5:, :10].all()


def test_reset_starts_over_and_first_frame_only_seeds() -> None:
    rng = np.random.default_rng(16)
    image = scene()
    detector = MotionDetector()
    results = feed(detector, moving_block_frames(image, rng, 5, 10))
    assert detector.motion
    detector.reset()
    assert not detector.motion
    first = detector.process(to_frame(scene(seed=50), rng), 100.0)
    assert not first.motion
    assert first.fraction == 0.0
    assert results


def test_large_object_is_motion_not_noise() -> None:
    """Someone walking up to the camera (a third of the picture) must not pass as noise."""
    rng = np.random.default_rng(17)
    image = scene()
    frames = [to_frame(image, rng, 4.0) for _ in range(20)]
    big = image.copy()
    for i in range(10):
        moved = big.copy()
        moved[20:170, 40 + 6 * i : 150 + 6 * i] = 20.0  # dark coat, 110x150 px
        frames.append(to_frame(moved, rng, 4.0))
    results = feed(MotionDetector(), iter(frames))
    assert not any(r.motion for r in results[:20])
    assert results[-1].motion
    assert 0.2 < results[-1].fraction < 0.7

"""Built-in motion detection: numpy frame differencing against a running background.

Per frame (a small grayscale picture from `frames.py`, ~320 px wide):

1. **Blur** with a box filter (an integral-image mean, O(1) per pixel): sensor noise and
   compression speckle average out, a real object (many pixels) does not.
2. **Difference** against the background, an exponential moving average of past blurred frames
   whose time constant is given in seconds, so it means the same at any detection rate.
3. **Global compensation**: the median difference is subtracted. A slow brightness ramp (sunrise,
   clouds, auto-exposure) moves every pixel alike; the background lags it by the same amount
   everywhere, and the median removes exactly that lag, while a moving object (a minority of the
   pixels) is untouched.
4. **Threshold**: the larger of a level set by `sensitivity` and a multiple of the noise (median
   absolute deviation of the difference, learnt from quiet frames), so a noisy night picture
   does not flood the mask while a clean day picture keeps the full sensitivity.
5. **Minimum area**: the changed fraction of the watched (non-excluded) area must reach
   `min_area`, on `trigger_frames` frames in a row (one-frame glitches such as a decoder hiccup
   or a keyframe's quality pulse do not count).
6. **Cool-down**: motion stays on until no frame triggered for `cooldown` seconds, so an object
   that pauses for a moment does not make the state flicker.

Changed pixels update the background ten times slower than still ones: a passing object leaves
no long ghost behind, while an object that stops (a parked car) still fades into the background
within a few tens of seconds instead of reporting motion forever. A change covering nearly the
whole picture (lights switched on, the camera's day/night switch) re-seeds the background and is
not reported as motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np
import numpy.typing as npt

from . import Box

type GrayFrame = npt.NDArray[np.uint8]
type FloatImage = npt.NDArray[np.float32]
type BoolImage = npt.NDArray[np.bool_]

# Sensitivity 1..100 maps linearly onto a threshold of 36..4 grey levels (of 255) on the blurred
# difference; 50 gives 20, which a person in an ordinary picture clears easily.
_THRESHOLD_AT_ZERO = 36.0
_THRESHOLD_SLOPE = 0.32
# Robust sigma from the median absolute deviation of a Gaussian.
_MAD_TO_SIGMA = 1.4826
# Every 4th pixel of every 4th row is plenty for the median/MAD statistics and 16x cheaper.
_STATS_STEP = 4
# A gap longer than this between two frames (stream hiccup) does not count as elapsed time for
# the background: it would otherwise jump straight to the newest frame and hide real motion.
_MAX_DT = 2.0
# Frames after (re)seeding the background that only learn the noise level, never trigger.
_WARMUP_FRAMES = 3


@dataclass(frozen=True, slots=True)
class MotionOptions:
    """Tuning of the motion detector; the defaults suit an ordinary camera at 5 fps."""

    sensitivity: int = 50  # 1 (only large contrast) .. 100 (faint changes)
    min_area: float = 0.005  # fraction of the watched area that must change
    cooldown: float = 1.0  # seconds without trigger before motion turns off
    trigger_frames: int = 2  # consecutive triggering frames needed to turn motion on
    background_time: float = 3.0  # seconds: time constant of the background average
    blur_radius: int = 2  # box blur window is (2r+1)² pixels of the detection frame
    noise_factor: float = 4.0  # threshold is at least this many noise sigmas
    foreground_update: float = 0.1  # background update rate of changed pixels, relative
    scene_change_area: float = 0.7  # a change this large re-seeds the background instead
    exclude: tuple[Box, ...] = ()  # ignored rectangles, relative coordinates
    # Optional ignore mask of any size (True = ignored), scaled to the frame by nearest pixel.
    exclude_mask: npt.NDArray[np.bool_] | None = field(default=None, compare=False)

    @property
    def base_threshold(self) -> float:
        """Return the difference (grey levels) a pixel must exceed, before noise adaptation."""
        sensitivity = min(100, max(1, int(self.sensitivity)))
        return _THRESHOLD_AT_ZERO - _THRESHOLD_SLOPE * sensitivity


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What one frame showed."""

    motion: bool  # the detector's state: confirmed motion, held through the cool-down
    triggered: bool  # this frame changed enough (before confirmation and cool-down)
    fraction: float  # changed fraction of the watched area
    box: Box | None  # bounding box of the changed pixels when triggered (relative)
    threshold: float  # the threshold used, in grey levels
    scene_change: bool = False  # the background was re-seeded on this frame


def box_blur(image: npt.NDArray[np.generic], radius: int) -> FloatImage:
    """Return the mean over a (2r+1)² window around each pixel (edges repeated).

    Separable running sums (cumsum) make the cost independent of the radius; float32 is exact
    enough because one row or column of 8-bit values sums to far below 2**24.
    """
    data = image.astype(np.float32, copy=False)
    if radius <= 0:
        return data
    size = 2 * radius + 1
    scale = np.float32(1.0 / size)
    for axis in (0, 1):
        # Work along axis 0 of a view; one extra leading element makes window j simply
        # sums[j + size] - sums[j], with no edge case.
        moved = np.moveaxis(data, axis, 0)
        padded = np.pad(moved, [(radius + 1, radius), (0, 0)], mode="edge")
        sums = np.cumsum(padded, axis=0, dtype=np.float32)
        window = np.multiply(sums[size:] - sums[:-size], scale, dtype=np.float32)
        data = np.moveaxis(window, 0, axis)
    return data


def build_mask(
    shape: tuple[int, int], exclude: tuple[Box, ...], exclude_mask: BoolImage | None
) -> BoolImage:
    """Return the watched pixels (True) of a frame of `shape` (rows, columns)."""
    height, width = shape
    watched = np.ones(shape, dtype=np.bool_)
    for zone in exclude:
        box = Box.clamped(zone.x_min, zone.y_min, zone.x_max, zone.y_max)
        x0, x1 = math.floor(box.x_min * width), math.ceil(box.x_max * width)
        y0, y1 = math.floor(box.y_min * height), math.ceil(box.y_max * height)
        watched[y0:y1, x0:x1] = False
    if exclude_mask is not None and exclude_mask.size:
        mask = np.asarray(exclude_mask, dtype=np.bool_)
        rows = (np.arange(height) * mask.shape[0]) // height
        cols = (np.arange(width) * mask.shape[1]) // width
        watched &= ~mask[np.ix_(rows, cols)]
    return watched


class MotionDetector:
    """Stateful motion detector for one camera. Not thread-safe: use it from one thread."""

    def __init__(self, options: MotionOptions | None = None) -> None:
        """Create a detector; the first frame only seeds the background."""
        self.options = options or MotionOptions()
        self._background: FloatImage | None = None
        self._watched: BoolImage | None = None
        self._watched_count = 0
        self._last_time: float | None = None
        self._streak = 0
        self._motion = False
        self._last_trigger: float | None = None
        self._noise = 0.0
        self._warmup = 0
        self.scene_changes = 0

    def reset(self) -> None:
        """Forget the background and the state (new connection, detection re-enabled)."""
        self._background = None
        self._last_time = None
        self._streak = 0
        self._motion = False
        self._last_trigger = None

    @property
    def motion(self) -> bool:
        """Return the current state."""
        return self._motion

    def process(self, gray: GrayFrame, timestamp: float) -> MotionResult:
        """Analyse one grayscale frame taken at `timestamp` (seconds, any monotonic origin)."""
        opts = self.options
        image = box_blur(gray, opts.blur_radius)
        background = self._background
        if background is None or background.shape != image.shape:
            self._seed(image, timestamp)
            return MotionResult(False, False, 0.0, None, opts.base_threshold)

        assert self._watched is not None
        previous = self._last_time if self._last_time is not None else timestamp
        elapsed = min(max(timestamp - previous, 0.0), _MAX_DT)
        self._last_time = timestamp
        alpha = 1.0 - math.exp(-elapsed / max(opts.background_time, 1e-3))

        diff = image - background
        sample = diff[::_STATS_STEP, ::_STATS_STEP][self._watched[::_STATS_STEP, ::_STATS_STEP]]
        if sample.size:
            offset = float(np.median(sample))
            measured = _MAD_TO_SIGMA * float(np.median(np.abs(sample - offset)))
        else:  # everything excluded
            offset, measured = 0.0, 0.0
        noise = self._noise_level(measured)
        threshold = max(opts.base_threshold, opts.noise_factor * noise)
        changed = np.abs(diff - offset) > threshold
        changed &= self._watched
        count = int(np.count_nonzero(changed))
        fraction = count / self._watched_count if self._watched_count else 0.0

        if fraction >= opts.scene_change_area:
            # Lights on/off or a day/night switch: not motion, start over from this picture.
            self.scene_changes += 1
            self._background = image
            self._streak = 0
            self._noise = 0.0
            self._warmup = _WARMUP_FRAMES  # the new scene may be noisier (night mode)
            return MotionResult(self._hold(timestamp), False, fraction, None, threshold, True)

        # Raw difference (with the global offset): the background follows light changes.
        rate = np.where(changed, np.float32(alpha * opts.foreground_update), np.float32(alpha))
        background += rate * diff

        triggered = fraction >= opts.min_area and count > 0 and self._warmup == 0
        if self._warmup:
            self._warmup -= 1
        elif not triggered:
            # Learn the noise from quiet frames only: a big object must not raise it.
            self._noise += (min(measured, 2.0 * self._noise + 1.0) - self._noise) * alpha
        self._streak = self._streak + 1 if triggered else 0
        # Confirmation is needed to turn motion on; once on, any triggering frame extends it.
        if triggered and (self._motion or self._streak >= max(1, opts.trigger_frames)):
            self._motion = True
            self._last_trigger = timestamp
        motion = self._hold(timestamp)
        box = _bounding_box(changed) if triggered else None
        return MotionResult(motion, triggered, fraction, box, threshold)

    def _noise_level(self, measured: float) -> float:
        """Return the noise sigma to use for this frame.

        The frame's own measurement (median absolute deviation) is used, but capped near the
        long-term level learnt from quiet frames: a person filling a third of the picture, or
        a change of every pixel, would otherwise look like "noise" and hide itself. During the
        warm-up after (re)seeding the level is learnt from scratch, conservatively (maximum).
        """
        if self._warmup:
            self._noise = max(self._noise, measured)
            return self._noise
        return min(measured, 1.5 * self._noise + 1.0)

    def _hold(self, timestamp: float) -> bool:
        """Keep motion on through the cool-down after the last confirmed trigger."""
        if (
            self._motion
            and self._last_trigger is not None
            and timestamp - self._last_trigger >= self.options.cooldown
        ):
            self._motion = False
        return self._motion

    def _seed(self, image: FloatImage, timestamp: float) -> None:
        self._background = image.copy()
        self._last_time = timestamp
        self._streak = 0
        self._noise = 0.0
        self._warmup = _WARMUP_FRAMES
        shape = (int(image.shape[0]), int(image.shape[1]))
        if self._watched is None or self._watched.shape != shape:
            self._watched = build_mask(shape, self.options.exclude, self.options.exclude_mask)
            self._watched_count = int(np.count_nonzero(self._watched))


def _bounding_box(changed: BoolImage) -> Box | None:
    """Return the relative bounding box of the True pixels."""
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    if not rows.size or not cols.size:
        return None
    height, width = changed.shape
    return Box.clamped(
        cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height
    )

"""The options of a video job that the image jobs do not have: each default with the measurements
behind it, and each limit. The CLI reads its defaults and help from here without loading torch;
videojob.VideoJob checks a job's values against them."""

from __future__ import annotations

from .errors import InputError
from .settings import HISTORY_SIZE
from .settings import OWN_DEFAULTS as STYLE_OWN_DEFAULTS

FLOW_MODES = ("dis", "none", "independent")
DEFAULT_FLOW = "dis"
# OpenCV's DIS optical flow presets (flow.DIS_PRESETS), fastest first.
FLOW_PRESETS = ("ultrafast", "fast", "medium")
DEFAULT_FLOW_PRESET = "medium"
# Measured (README, "Flicker"): our loss terms are large (content ~1e12, style ~1e12 per frame,
# both independent of the size) while TemporalLoss is a mean of squared 0..255 differences
# (~1e2), so the weight is large too. Measured at 64-96 px (all three terms are independent of
# the size): 3e9 brings flicker down to about the input's own warping error, the output follows
# the motion as closely as the input does, and the style loss stays within ~15% of the warped
# start alone; 1e10 and more hold the output to the flow's prediction tighter than the input
# itself follows it (changes the flow misses are suppressed) and cost 40% or more style loss.
DEFAULT_TEMPORAL_WEIGHT = 3e9
# Cut scores of consecutive frames of one shot stay well below this, those across a cut above.
DEFAULT_SCENE_THRESHOLD = 0.6
# A change of light of at most this many frames after which the picture is back (a camera's
# flash, a strobe, lightning) is a flash, not two cuts (cuts.py): the shot goes on through it. On
# the sample clip at 64 px with one frame flashed (brightness +0.5), the two cuts it made cost two
# cold starts (3000 iterations) and a new texture from there to the shot's end; a flash of one or
# two frames is what a camera's flash or a rolling shutter gives at 24-30 fps. 0: every change
# of light is a cut, as the releases before.
DEFAULT_FLASH_FRAMES = 2
MAX_FLASH_FRAMES = 4  # the cut scan records each frame's colours against this many frames before
# The share of a frame's pixels a caption, a logo or a subtitle over black or white may take and
# the frame still be blank (fades.py). A title card on black (PySceneDetect's testvideo.mp4: a
# copyright line) was stylized as a whole frame of the style's texture, and the fade in after it,
# from black frames with a caption, was no fade: its frames came out in the style's full light.
# That line is 1.3% of the frame's pixels at 1280 px, 3% at 128 px and 4.3% at 32 px (a small
# frame's area filter spreads it). The larger the share, the larger a lit part of the picture (a
# moon in a night sky, a lamp in a dark room) that leaves a frame blank, written as it is: at 5%
# it must cover less than a twentieth of the frame. 0: the whole frame, as the releases before
# (OWN_DEFAULTS).
DEFAULT_OVERLAY_SHARE = 0.05
MAX_OVERLAY_SHARE = 0.25
# A flash's frames are held to the frame before it by the temporal term, through a flow computed
# with the flash's light matched to the frame before's (flow.match_light): on the sample clip at
# 64 px the flashed frame then took 129 iterations instead of 254, at 2.6% less style loss, and
# kept the frame before's texture instead of laying out a grainier one (docs/video-quality.md).
# In a stylized frame the flash's light hardly shows either way: the style gives the colours.
# --free-flashes: free of the temporal term, as the release before.
# Warm-started frames stop once the loss fell by less than this fraction over STOP_WINDOW
# iterations: a still shot then costs a few iterations, a moving one up to its --iterations.
# With DEFAULT_LBFGS_HISTORY's 50 pairs, 3e-3 took a third fewer iterations than the releases
# before (20 pairs, 1e-3) at style loss within 2%. A shot's first frame at MIN_FIRST_ITERATIONS'
# 1500 lowers the whole shot's style loss, and 5e-3 spends some of that on speed: against the
# previous default (3e-3, the first frame at 600), on four clips at 64 px and two at 128 px,
# 13-17% fewer iterations, 4-17% less flicker, style loss from 0.4% above (the shake) to 10.6%
# below; against the release before issue 17, 31-49% of its iterations at 0.0-6.8% less style
# loss (docs/video-quality.md). 1.5e-2 with a first frame of 600 cost 6.6% style loss on
# bikes.mp4. Since the style layers are weighed by their positions and a shot's first frame
# settles, 1e-2 against 5e-3 (docs/video-quality.md, "Warm frames stopped at 1e-2"): the pan at
# 128 px 12% fewer iterations a warm frame (41.3), flicker by Farneback 0.9% lower, by DIS 4.0% and
# E_warp 7.3% higher; the real clip at 64 and 128 px, the shake and the pan at 64 px 1-4% fewer,
# flicker 0.3-8% lower (carphone's E_warp 0.2% higher); the style loss at 512 px within 0.4% on
# all. Where the style term's rule (below) is met later, as on the real clip, it decides.
DEFAULT_STOP_TOLERANCE = 1e-2
STOP_WINDOW = 10
# And only once the style term too fell by less than this fraction over STOP_WINDOW iterations.
# The total alone stops a frame while its style term still falls wherever the content term is the
# larger: with gravel.png (content ~15 times style) the defaults above left 9.7% more style loss
# than the release before on the pristine clip at 64 px, and 2e-2 on the style term gives -1.6%
# at 36.1 iterations a frame, still less flicker by all three measures; with ihc.png (style 0.6-2
# times content) the total's rule is met later than this one and nothing changes
# (docs/video-quality.md, "Another style"). 0: the total alone, as the releases before.
DEFAULT_STOP_STYLE_TOLERANCE = 2e-2
# A warm frame (with at least DEFAULT_TRACKED_SHARE of its pixels reliable: every one) stops after
# at most this many iterations, whatever the stopping rule says. Under the weighed style layers a
# tracked frame's objective is within 1% of where the rule ends it by iteration 30 and its style
# loss within 1% by 40 (docs/video-quality.md, "Warm frames stopped at 1e-2"); the iterations after
# that are the rule's tail. In the release before only frames at 90% reliable or more were capped:
# on the pan at 128 px (97-98% reliable) 39.8 iterations a warm frame instead of 41.3, the style
# loss at 512 px 2.7% lower but at the frames' own size 3.5% higher (3.6-6.2% over its frames
# 61-150: what a capped frame leaves undone reaches the next), flicker by Farneback 4.2% and E_warp
# 8.3% lower, by DIS 4.7% higher; on the pan at 256 px 40.0 instead of 51.2, flicker 3% lower by
# all three measures ("Warm frames the flow tracks stop at 40 iterations"). 0: --iterations for
# every warm frame, as the releases before.
DEFAULT_ITERATIONS_TRACKED = 40
# The share of a warm frame's pixels the flow must leave reliable for --iterations-tracked to cap
# it. 0.9 in the release before, where a frame with more unreliable pixels kept --iterations and
# the stopping rule: on real footage at 256 px with ihc.png (11-22% of most frames' pixels
# unreliable) and at 128 px with gravel.png and The Starry Night that left 46-54 iterations a warm
# frame. Every warm frame capped instead (0; docs/video-quality.md, "Every warm frame stops at 40
# iterations"), on seven runs of real footage: 35.4-40.0 iterations a warm frame, 5-27% fewer;
# flicker 1.4-14% lower by Farneback's flow and 2.7-19% by E_warp, by the job's own DIS measure
# within 2% at 256 px and 3-16% higher at 128 px; the style loss at 512 px 1.3% lower to 1.5%
# higher, at the frames' own size 0.9-5.0% higher. The cost lands on the frames the flow tracks
# worst (about half their pixels unreliable, fast motion), which restyle those pixels nearly from a
# cold start: at the end of a fast shot sharpness retention fell 7-12% on four of the seven. Under
# full layer weights the same cap had cost 10.5-12.5% of style loss; under the weighed layers a
# capped frame stops a percent or two above where the rule would.
DEFAULT_TRACKED_SHARE = 0.0
# The options whose defaults releases changed, each with the value a job's stylize settings imply
# where they leave it out (the releases that added a setting leave it out at its earlier value, so
# that the jobs begun before keep their hash; None: always recorded where it applies). A rerun
# that leaves such an option unset resumes a job begun under other defaults with the values it
# began with, where that keeps its stylize stage's settings as recorded (video.py,
# video_records.keep_own_defaults): an upgrade mid-job does not discard hours of stylized frames for a
# default nobody asked to change. Issue 17 changed these from the release before it (18ed178):
# 20 curvature pairs, the unreliable pixels started from the content, the first frame in one run
# of 600 iterations, warm frames stopped at 1e-3 (then 3e-3, then 5e-3), every warm frame given
# --iterations however much of it the flow tracked, and the style settings' own
# (settings.OWN_DEFAULTS: no range term).
OWN_DEFAULTS = {
    "iterations_first": None,
    "stop_tolerance": None,
    "stop_style_tolerance": 0.0,
    "iterations_tracked": 0,
    "tracked_share": 0.9,
    "first_stop_tolerance": 0.0,
    "lbfgs_history": HISTORY_SIZE,
    "unreliable_start": "content",
    "first_rounds": 1,
    "settle": "free",
    "flash_frames": 0,
    "free_flashes": True,
    "ignore_fades": True,
    "overlay_share": 0.0,
    "stylize_bars": True,
    "light_cuts": True,
    "motion_cuts": True,
    **STYLE_OWN_DEFAULTS,  # StyleSettings fields; the others are VideoJob's
}
# And once the image moved by less than this many 0..255 levels (mean per value) over STOP_WINDOW
# iterations; 0: off (docs/video-quality.md).
DEFAULT_STOP_CHANGE = 0.0
# --long-term: the temporal loss applies against these earlier stylized frames (Ruder et al. 2016,
# "long-term consistency"; 1: the previous frame alone). Each frame further back keeps its content
# frame, stylized frame and flow pair on disk that much longer, hence a bound.
DEFAULT_LONG_TERM = (1,)
# How a stylized frame is carried onto the next (the warm start and the temporal loss's target):
# a bilinear warp by a half pixel halves the Laplacian variance of a stylized texture, and the
# temporal loss then holds the next frame to that blur (docs/video-quality.md).
WARP_MODES = ("bilinear", "bicubic")
DEFAULT_WARP = "bilinear"
# What a warm frame starts from where the flow cannot be trusted (disocclusions, motion boundaries,
# the frame's border): the warped previous frame, as Ruder et al. initialize (its temporal loss is
# masked there all the same, so the content loss restyles those pixels), or the content frame, as
# the releases before did. Starting from the content costs each frame a cold start's work on those
# pixels: on the sample clip at 128 px (4-9% of the pixels unreliable) the warped start took 39.8
# iterations a warm frame against 64.4, 14-38% fewer on three clips, at 16-23% less flicker; the
# price is a softer texture (the content start's grain) and up to 2.6% more style loss
# (docs/video-quality.md).
UNRELIABLE_STARTS = ("warped", "content")
DEFAULT_UNRELIABLE_START = "warped"
# A shot's first frame settles: a cold run, then this many rounds in all, each later one from the
# image resampled as a warm start is (temporal.py, "Settling"); 1: the cold run alone. With free
# rounds (below; the releases before) 2 gave the lowest style loss on the sample clip at 64 and 128
# px and the shake, and after 4 the first frame came out softer than the shot's later frames. With
# held rounds, on the sample clip and the shake at 64 px, 3 (two held rounds) against 2: the style
# loss at 512 px 1.3-1.6% lower, E_warp 1.5-5% lower, flicker by DIS the same, the first frame's
# grain nearer its successors' (docs/video-quality.md).
DEFAULT_FIRST_ROUNDS = 3
# How each settling round after the cold run runs (temporal.SettleRound): held, as a warm frame of a
# still shot does (held to the image resampled by the temporal term, stopped by the warm frames'
# rule), or free (SETTLE_ITERATIONS and no temporal term: the releases before). A free round lands
# where a cold start does, not where the warm frames stay: at 64 px its first frame kept twice the
# Laplacian variance of the shot's tenth frame, coloured grain the warm frames shed over their
# first 5-10 frames, a crisp-then-soft "pop" at every cut. Held, on the same clips at 64 px: the
# style loss at 512 px 1.8-2.4% lower, sharpness retention on the shake 0.863 against 0.710, flicker
# by E_warp 3-5% lower, by DIS the same on the shake and 3.5% higher on the sample clip
# (docs/video-quality.md).
SETTLE_MODES = ("held", "free")
DEFAULT_SETTLE = "held"
# Each settling round after the cold run: enough for L-BFGS to gather curvature and restore the
# grain the resampling took (measured with the first frame at 600: 550 cold and one run of 50).
SETTLE_ITERATIONS = 50
# --settle-shift: each settling round starts from the first frame moved by this many pixels
# (diagonally) and back with --warp's interpolation, as a warm start is carried. A half pixel blurs
# the most (a bilinear warp by it takes the finest grain whole); 0: the rounds start from the cold
# run's image as it is (its pop). Which shift opens a shot at its level follows no rule of size:
# at 64 px with ihc.png 0.25-0.5, at 128 px 0.1 (where a half pixel opens the shot at 40-57% of
# its later frames' Laplacian variance, sharpening over 3-12 frames), at 256 px more than 0.1. And
# over whole runs the smaller shifts scored no better: flicker by Farneback, E_warp and the bicubic
# measure up to 7-15% higher at 64 px, the style loss at 512 px 6.7% higher on bikes.mp4 with
# ihc.png at 128 px and 33% at 256 px, the shot's extra grain kept throughout
# (docs/video-quality.md, "How far a shot's first frame is resampled"). On a still shot
# (newtonscradle.gif at 128 px) 0 takes away the ramp but pops, at 20% more style loss at 512 px
# with ihc.png (2.4% less with gravel.png): a shift set from how little a shot moves would cost that
# (docs/video-quality.md, "A fifth real clip"). With four painted styles there, 0.1 against 0.5: the
# style loss at 512 px 6-38% higher with three, 3.9% lower with one, the content loss 17-21% and
# E_warp 13-27% higher with all four ("Four painted styles on the still shot").
DEFAULT_SETTLE_SHIFT = 0.5
MAX_SETTLE_SHIFT = 0.5
MAX_FIRST_ROUNDS = 16
# The curvature pairs L-BFGS keeps for every frame of a video job (lbfgs.py; images keep
# lbfgs.HISTORY_SIZE, 20). A warm frame starts near its optimum, where the slow tail of the
# descent is what costs iterations, and a longer history models that tail better: on the sample
# clip at 64 px, 50 pairs reached a lower style loss than 20 in 5% fewer iterations, 100 no better
# than 50. Memory: two frame-sized float32 buffers a pair. Unless --lbfgs-history is given, the
# pairs are bounded by LBFGS_HISTORY_BYTES (50 pairs at 1080p) and never fewer than the releases
# before kept: a 4K job's history takes the memory it took then, not 2.5 times more.
DEFAULT_LBFGS_HISTORY = 50
LBFGS_HISTORY_BYTES = 2.5e9
MAX_LBFGS_HISTORY = 200
MAX_LONG_TERM = 16
# A shot's first frame, unless --iterations-first is given: twice --iterations, and never fewer
# than this. It is a cold start, whatever the warm frames' budget, and the warm frames keep the
# texture it lays out, so its style loss is the shot's: at 1500 iterations instead of the
# releases before's 600 the shots' style loss was 1.0-13% lower on four clips at 64 px (the shake,
# the pan, carphone and its pristine cut) and 1.4-7.5% below the release before's, at 2-11% less
# flicker and as many warm-frame iterations; 1000 got about two thirds of the gain on carphone
# (docs/video-quality.md, "A shot's first frame at 1500 iterations"). The 900 iterations more a
# shot cost about 9 s at 720p at the 10 ms an iteration on an H200. Capped warm frames
# need it most: with --iterations 40 and the first frame at twice that (80), the style loss was 21%
# above the default's on the pan and 26% on bikes.mp4; with the first frame at 600, 10.5% and
# 12.5% ("A cap of 40, the first frame at 600").
MIN_FIRST_ITERATIONS = 1500
# --first-stop-tolerance: a shot's first frame's cold run stops once its loss and its style term
# each fell by less than this fraction over FIRST_STOP_WINDOW iterations, within its iterations; 0:
# all of them, as the releases before. The 1500 (MIN_FIRST_ITERATIONS) were chosen before the style
# layers were weighed and the first frame settled in held rounds; since, a cold start's loss falls
# by under 0.2% a hundred iterations long before 1500, and what the rest changes is within how far
# one run moves from another when its first frame changes at all. Against all 1500, at 2e-3
# (docs/video-quality.md, "A shot's first frame stops at 0.2% over 100 iterations"), on eight runs:
# first frames of 390-1163 iterations instead of 1458-1491, 17-37% fewer iterations over every
# frame (5-9% on the pan and the sample clip at 128 px), flicker and the style loss at 512 px
# within 0.8% or lower, but on the pan at 128 px: flicker 1.3-4.6% and the style loss 2.1% higher,
# where a first frame of 1400 instead of 1500 moved them by -2.7 to +6.0% and +0.8% (600: the
# style loss +5.4%). 1e-3 stopped the pan at 64 px 100 iterations later, no better. Shots shorter
# than 3-9 frames still cost more than the release before issue 17's, which ran 600.
DEFAULT_FIRST_STOP_TOLERANCE = 2e-3
FIRST_STOP_WINDOW = 100
# --passes: Ruder, Dosovitskiy and Brox's multi-pass algorithm (2018, passes.py); each pass costs
# about what the first does, hence a bound.
MAX_PASSES = 8
# The options that shape how --flow dis carries one frame onto the next, with their defaults: any
# other value is refused with another --flow, where it would be silently ignored.
DIS_ONLY = {
    "iterations_tracked": DEFAULT_ITERATIONS_TRACKED,
    "tracked_share": DEFAULT_TRACKED_SHARE,
    "temporal_weight": DEFAULT_TEMPORAL_WEIGHT,
    "long_term": DEFAULT_LONG_TERM,
    "warp": DEFAULT_WARP,
    "unreliable_start": DEFAULT_UNRELIABLE_START,
    "first_rounds": DEFAULT_FIRST_ROUNDS,
    "settle": DEFAULT_SETTLE,
    "settle_shift": DEFAULT_SETTLE_SHIFT,
    "passes": 1,
    "flash_frames": DEFAULT_FLASH_FRAMES,
    "free_flashes": False,
    "light_cuts": False,
    "motion_cuts": False,
}
# Absurd values are refused rather than run: a typo'd count would spawn processes or iterate for ever.
MAX_FLOW_WORKERS = 256
MAX_SHOT_FRAMES = 10_000_000
MAX_SEGMENT_OVERLAP = 1000


def check_flow_options(preset: str, scene_threshold: float, flash_frames: int) -> None:
    """--flow-preset, --scene-threshold and --flash-frames, in the words of both commands that
    take them (`stylize video` and `stylize flicker`)."""
    if preset not in FLOW_PRESETS:
        *faster, slowest = FLOW_PRESETS
        raise InputError(f"--flow-preset {preset!r}: must be {', '.join(faster)} or {slowest}")
    if not 0 <= scene_threshold <= 1:
        raise InputError(f"--scene-threshold {scene_threshold}: must be between 0 and 1 (1: never cut)")
    if not 0 <= flash_frames <= MAX_FLASH_FRAMES:
        raise InputError(f"--flash-frames {flash_frames}: must be between 0 (off) and {MAX_FLASH_FRAMES}")


def parse_long_term(text: str) -> tuple[int, ...]:
    """--long-term's comma-separated list ("1,2,4"); VideoJob checks the values."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--long-term {text}: must be whole numbers separated by commas, such as 1,2,4") from None

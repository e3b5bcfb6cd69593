# `make demo` and `make test` install into .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test torture bench bench-video install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo runs the main jobs on the bundled samples: a 2.5 s clip with sound through
# `stylize video` and a two-photo tree through `stylize images`, sized to finish in about two
# minutes on a 2-core CPU (every 2nd frame, 160 px). Where torch sees a GPU the same command
# stylizes every frame at a larger size. These variables are expanded when the recipe runs,
# after the install. Running it again resumes, or finds everything done.
DEMO_GPU = $(shell $(BIN)/python -c "import torch; print('yes' if torch.cuda.is_available() else '')")
DEMO_VIDEO = $(if $(DEMO_GPU),--size 384 --iterations 60 --iterations-first 300,--size 160 --every-nth 2 --iterations 8 --iterations-first 40)
DEMO_IMAGES = $(if $(DEMO_GPU),--size 768 --iterations 300,--size 224 --iterations 50)

demo: $(STAMP)
	$(BIN)/stylize video samples/carphone.mp4 --style samples/ihc.png -o $(OUT)/carphone-ihc.mp4 $(DEMO_VIDEO)
	$(BIN)/stylize images samples/photos --style samples/ihc.png -o $(OUT)/photos-ihc $(DEMO_IMAGES)
	@echo
	@echo "video:  $(OUT)/carphone-ihc.mp4 (frames, job record and log in $(OUT)/carphone-ihc.mp4.work)"
	@echo "images: $(OUT)/photos-ihc/ (the tree of samples/photos, stylized; records in $(OUT)/photos-ihc/.stylize)"
	@echo "reports: $(OUT)/carphone-ihc.mp4.work/report.html and $(OUT)/photos-ihc/.stylize/report.html (open in a browser)"

# One test process per logical core, at most 4 (pytest-xdist): helpers.py pins each to one torch
# thread, so one process left the second core of a 2-core machine mostly idle (824 s; 588 s with two).
# A test module runs whole in one process (loadscope): its module fixtures (clips, finished jobs)
# are made once, not once per process (502 s against 574 s, 13m20s of CPU against 15m52s).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n logical --maxprocesses 4 --dist loadscope

# Jobs SIGKILLed many times at random moments (tests/test_crash_resume.py); TORTURE_SEED=N varies them.
torture: $(STAMP)
	$(BIN)/python -m pytest -m torture tests/test_crash_resume.py

clean:
	rm -rf $(OUT) .pytest_cache

# Then the long-video scale benchmark (issue 15): synthetic clips of 1,000 and 3,000 frames with
# three cuts, --size 96, one iteration a frame on the CPU; BENCH_LONG="--frames 300 900" runs it shorter.
# Then shots in parallel (issue 16): two Dask workers against one on a clip of four shots, and the
# flicker at the seams of --max-shot-frames on the sample clip; BENCH_SHOTS="--frames-per-shot 10" is shorter.
bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/long_video.py $(BENCH_LONG)
	$(BIN)/python bench/shots.py $(BENCH_SHOTS)

# Video quality (issue 17): iterations, time, flicker, losses, style drift and sharpness retention per
# mode (six unless --modes says otherwise) on the sample clip, a 150-frame synthetic pan and a shake;
# BENCH_VIDEO="--frames 40 --size 96" runs it short, BENCH_VIDEO="--modes all" runs every mode.
bench-video: $(STAMP)
	$(BIN)/python bench/video_quality.py $(BENCH_VIDEO)

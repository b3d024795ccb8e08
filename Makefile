# yolo7d — build, test and run targets. `make help` lists them.
#
# Two commands do everything on a fresh Debian 12 / Ubuntu 22.04+ machine:
#   make run    install what is missing, build, make the demo video, run the agent on the embedded broker
#   make demo-model   train the demo model (models/demo.safetensors) on synthetic shapes
#   make test   install what is missing (apt), lint, run every test
#
# OPENCV selects the gocv release to build against:
#   OPENCV=4.6 (default)  gocv v0.31.0: Debian 12 (4.6.0), JetPack 5 (4.5.4)
#   OPENCV=4.8            gocv v0.34.0: JetPack 6 (4.8.0)

SHELL      := /bin/bash
GO         ?= go
OPENCV     ?= 4.6
BUILD      ?= build
BIN        := $(BUILD)/yolo7d
CONFIG     ?= config.toml
# TAGS are Go build tags: TAGS=tensorrt compiles infer/trt (on a machine with
# TensorRT's headers, i.e. the Jetson).
TAGS       ?=
TEST_FLAGS ?= -count=1 -timeout 12m
BENCH      ?= .
BENCH_TIME ?= 1s
# The demo: a synthetic video of shapes, and the model make run uses.
DEMO_MODEL      := models/demo.safetensors
DEMO_METRICS    := models/demo.metrics.json
DEMO_EPOCHS     ?= 60
DEMO_VIDEO_ARGS := --width 1280 --height 720 --fps 15 --seconds 20 --seed 1
RUN_MODEL       := $(BUILD)/models/demo.safetensors
RANDOM_MODEL    := $(BUILD)/models/yolov7-tiny-relu.safetensors
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the build and the tests need.
APT_PACKAGES := build-essential pkg-config libopencv-dev libopenblas-dev ffmpeg \
	mosquitto mosquitto-clients systemd \
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-libav gir1.2-gst-rtsp-server-1.0 python3-gi

ifeq ($(OPENCV),4.8)
GOCV_48   := v0.34.0
MODFLAGS  := -modfile=$(BUILD)/go.opencv48.mod
MODPREREQ := $(BUILD)/go.opencv48.mod
else ifeq ($(OPENCV),4.6)
MODFLAGS  :=
MODPREREQ :=
else
$(error OPENCV must be 4.6 or 4.8, got $(OPENCV))
endif

.PHONY: help deps build test lint vet fmt run demo demo-model bench gpu-check gpu-check-run fuzz clean install-unit FORCE

help:
	@sed -n 's/^# \{0,1\}//p' Makefile | sed -n '1,10p'
	@echo "targets: deps build test lint run demo demo-model bench fuzz clean"

## deps: install every system package that is missing (apt-get, as root or via sudo).
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "system packages: all present"; fi
	@command -v $(GO) >/dev/null || { echo "Go is not installed (need Go 1.26+ on PATH or in /usr/local/go)"; exit 1; }
	$(GO) mod download

# The JetPack 6 build: the same module with gocv pinned to the release made
# for OpenCV 4.8. Its sums are kept in go.sum next to v0.31.0's.
$(BUILD)/go.opencv48.mod: go.mod go.sum
	@mkdir -p $(BUILD)
	cp go.mod $@
	cp go.sum $(BUILD)/go.opencv48.sum
	$(GO) mod edit -modfile=$@ -require=gocv.io/x/gocv@$(GOCV_48)

## build: the yolo7d binary in build/.
build: $(MODPREREQ)
	@mkdir -p $(BUILD)
	$(GO) build $(MODFLAGS) -trimpath -tags '$(TAGS)' -o $(BIN) ./cmd/yolo7d

## lint: gofmt and go vet.
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet -tags matprofile ./...
	@grep -q '^gocv.io/x/gocv v0.31.0 h1' go.sum && grep -q '^gocv.io/x/gocv v0.34.0 h1' go.sum || \
		{ echo "go.sum must hold the sums of gocv v0.31.0 (OpenCV 4.6) and v0.34.0 (OpenCV 4.8, OPENCV=4.8); see README"; exit 1; }
	@grep -q 'gocv.io/x/gocv v0.31.0' go.mod || { echo "go.mod must pin gocv.io/x/gocv v0.31.0 (newer releases need OpenCV >= 4.7)"; exit 1; }

## test: lint, then every test (real mosquitto, ffmpeg videos, OpenCV DNN). Golden
## data in ../shared/golden is used when present and skipped otherwise.
test: deps lint
	$(GO) test $(MODFLAGS) -tags matprofile $(TEST_FLAGS) ./...

## demo: the demo video and model that `make run` uses: build/demo.mp4 (shapes
## drifting on a changing background, by `yolo7d synth video`) and
## build/models/demo.safetensors, a copy of models/demo.safetensors (the model
## `make demo-model` trains) when it exists, else of a random 80-class model.
demo: build $(BUILD)/demo.mp4 $(RUN_MODEL)
	@if cmp -s $(RUN_MODEL) $(DEMO_MODEL); then \
		echo "make run uses $(DEMO_MODEL): trained on synthetic shapes (circle, square, triangle)"; \
	elif cmp -s $(RUN_MODEL) $(RANDOM_MODEL); then \
		echo "make run uses a random 80-class model: $(DEMO_MODEL) is absent (make demo-model trains it)"; \
	else \
		echo "make run uses $(RUN_MODEL) as it is (promoted by fine-tuning? rm it to reset)"; \
	fi

FORCE:

# The video's recipe: when it changes, the video is made again (this also
# replaces a demo.mp4 made by an older Makefile).
$(BUILD)/demo-video.args: FORCE
	@mkdir -p $(BUILD)
	@echo 'synth video $(DEMO_VIDEO_ARGS)' | cmp -s - $@ || echo 'synth video $(DEMO_VIDEO_ARGS)' > $@

$(BUILD)/demo.mp4: $(BUILD)/demo-video.args | build
	$(BIN) synth video $@ $(DEMO_VIDEO_ARGS)

# make run's model is copied from the trained demo model when there is one,
# else from the random model; a newer models/demo.safetensors replaces it.
$(RUN_MODEL): $(if $(wildcard $(DEMO_MODEL)),$(DEMO_MODEL),$(RANDOM_MODEL)) | build
	@mkdir -p $(@D)
	cp $< $@

# The random fallback: the weights of yolov7-tiny-relu.onnx, in the native
# format.
$(RANDOM_MODEL): | build
	@mkdir -p $(@D)
	$(BIN) model init --act relu --nc 80 --img 640 --seed 1 -o $@

## demo-model: train models/demo.safetensors (DEMO_EPOCHS epochs, default 60) on a
## synthetic shapes dataset with yolo7d's own trainer, from a half-depth,
## half-width yolov7-tiny; its val metrics go to models/demo.metrics.json.
## From scratch, so BatchNorm on batch statistics, the official lr0 0.01 and
## an optimiser step every 16 images (the fine-tune defaults suit a trained
## base model).
demo-model: build
	$(BIN) synth dataset $(BUILD)/synth --overwrite --train 512 --val 128 --img 256 --seed 1
	$(BIN) model init --act relu --depth 0.5 --width 0.5 --names circle,square,triangle \
		--img 256 --seed 1 -o $(BUILD)/demo-init.safetensors
	@mkdir -p $(dir $(DEMO_MODEL))
	$(BIN) finetune --data $(BUILD)/synth/data.yaml -m $(BUILD)/demo-init.safetensors \
		-o $(DEMO_MODEL) --epochs $(DEMO_EPOCHS) --img 256 --batch 16 --bn batch --lr0 0.01 --nbs 16 \
		--workdir $(BUILD)/demo-work
	$(BIN) eval -m $(DEMO_MODEL) --data $(BUILD)/synth/data.yaml --json > $(DEMO_METRICS).tmp
	mv $(DEMO_METRICS).tmp $(DEMO_METRICS)

## run: install what is missing (as make test does), then the agent in the foreground
## on the embedded broker with config.toml.
run: deps demo
	$(BIN) run --config $(CONFIG)

## bench: every benchmark (letterbox/decode/NMS, publisher throughput, ...).
bench: deps
	$(GO) test $(MODFLAGS) -run '^$$' -bench '$(BENCH)' -benchtime $(BENCH_TIME) -benchmem ./...

## gpu-check: the bundle of the infer/cudnn device check, build/gpu-check (test binary,
## golden data, ABI conformance program, PyTorch baseline); one device call then runs
## `bash infer/cudnn/gpucheck/run.sh build/gpu-check "$OUT"` (infer/cudnn/gpucheck/README.md).
gpu-check:
	bash infer/cudnn/gpucheck/build.sh

## gpu-check-run: run the device check here (OUT defaults to build/gpu-check/out).
gpu-check-run:
	bash infer/cudnn/gpucheck/run.sh build/gpu-check $${OUT:-build/gpu-check/out}

## fuzz: each fuzz target for 20 s.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
		done; done

clean:
	rm -rf $(BUILD)

# patchline — `make run` and `make test` install what is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := build

ORT_LIB := $(CURDIR)/.cache/onnxruntime/1.24.3/libonnxruntime.so.1
export PATCHLINE_ORT_LIB ?= $(ORT_LIB)
export CGO_ENABLED := 1

# `patchline version` names the commit it was built from (git describe;
# "dev" outside a git checkout). Only [A-Za-z0-9._+-] of it reach the
# shell: a tag name may hold ` or $( ).
VERSION := $(or $(shell git describe --always --dirty 2>/dev/null | tr -cd 'A-Za-z0-9._+-'),dev)
GO_BUILD := go build -ldflags '-X github.com/patchline/patchline/internal/cli.Version=$(VERSION)'

# Every package's unit tests run under the race detector (it does not see
# into C, but it does see the Go around OpenCV and ONNX Runtime: about 1.5x
# slower there). The end-to-end and model suites run without it: they are
# mostly C and processes, and would take minutes more.
SLOW_PKGS := ./cmd/... ./test/...
RACE_PKGS = $(shell go list ./... | grep -v -E '/(cmd|test)(/|$$)')

.PHONY: deps build run test test-short bench models vet tidy-check clean

deps:
	@scripts/deps.sh

build: deps
	$(GO_BUILD) -o bin/patchline ./cmd/patchline

run: build
	bin/patchline run -c pipeline.yaml

vet:
	go vet ./...

tidy-check:
	go mod tidy -diff

test: deps vet
	$(GO_BUILD) -o bin/patchline ./cmd/patchline
	go test -race -count=1 -timeout 15m $(RACE_PKGS)
	go test -count=1 -timeout 20m $(SLOW_PKGS)

bench: deps
	go run ./test/bench
	go test -run XXX -bench . -benchtime 2s ./internal/frame/ ./decode/ ./analyze/ ./generate/ ./internal/textgen/ ./sink/
	go test -run XXX -bench Cameras -benchtime 1x ./test/e2e/

# Retrain and re-export every model bundle, with the from-scratch baselines
# their cards compare against (not part of CI; about 90 minutes on 2 cores).
# Data sets come from `bin/patchline synth` into .cache/data. One torch
# thread with OpenBLAS on both cores is the fastest split on 2 cores
# (models/train/world.py says by how much).
models: export OPENBLAS_NUM_THREADS = 2
models: export OMP_NUM_THREADS = 1
models: build
	@scripts/deps.sh python3-torch python3-numpy libopenblas0-pthread
	/usr/bin/python3 models/train/pretrain_framegen.py
	/usr/bin/python3 models/train/train_scene_vit.py
	/usr/bin/python3 models/train/train_scene_vit.py --scratch
	/usr/bin/python3 models/train/train_caption.py
	/usr/bin/python3 models/train/train_caption.py --scratch
	/usr/bin/python3 models/train/cards.py
	/usr/bin/python3 models/train/export_vit.py
	/usr/bin/python3 models/train/make_test_bundles.py
	/usr/bin/python3 generate/testdata/make_tiny_framegen.py
	/usr/bin/python3 internal/textgen/testdata/make_tiny.py

clean:
	rm -rf bin

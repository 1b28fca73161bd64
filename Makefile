# patchline — `make run` and `make test` install what is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := build

ORT_LIB := $(CURDIR)/.cache/onnxruntime/1.24.3/libonnxruntime.so.1
export PATCHLINE_ORT_LIB ?= $(ORT_LIB)
export CGO_ENABLED := 1

# Packages without cgo run under the race detector; the OpenCV/ONNX Runtime
# ones run without it (the detector does not see into C and slows them 10x).
CGO_PKGS := ./decode/... ./analyze/... ./internal/app/... ./internal/cli/... ./cmd/... ./test/...
PURE_PKGS = $(shell go list ./... | grep -v -E '/(decode|analyze|cmd|test)(/|$$)|/internal/(app|cli)(/|$$)')

.PHONY: deps build run test test-short bench models vet tidy-check clean

deps:
	@scripts/deps.sh

build: deps
	go build -o bin/patchline ./cmd/patchline

run: build
	bin/patchline run -c pipeline.yaml

vet:
	go vet ./...

tidy-check:
	go mod tidy -diff

test: deps vet
	go build -o bin/patchline ./cmd/patchline
	go test -race -count=1 -timeout 10m $(PURE_PKGS)
	go test -count=1 -timeout 20m $(CGO_PKGS)

bench: deps
	go run ./test/bench
	go test -run XXX -bench . -benchtime 2s ./internal/frame/ ./analyze/

models:
	@scripts/deps.sh python3-torch libopenblas0-pthread
	/usr/bin/python3 models/train/export_vit.py

clean:
	rm -rf bin

GO ?= go
PKGS := ./...

.PHONY: build test race bench lint proto proto-check e2e docker fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -o bin/ncsn ./cmd/ncsn

# The default suite: what CI and the README run.
test:
	$(GO) test -timeout 20m $(PKGS)

race:
	$(GO) test -race -timeout 30m $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1)
	$(GO) vet $(PKGS)

# Short fuzzing of every decoder.
FUZZTIME ?= 20s
fuzz:
	./.ci/fuzz $(FUZZTIME)

clean:
	rm -rf bin

# Regenerate proto/ Go code with the pinned generators; proto-check fails on drift.
proto:
	./proto/generate.sh

proto-check:
	./.ci/proto-check

GO ?= go
PKGS := ./...

.PHONY: build test race bench lint proto proto-check e2e docker fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -o bin/ncsn ./cmd/ncsn

# The default suite: what CI and the README run.
test:
	$(GO) test -timeout 20m $(PKGS)

race:
	$(GO) test -race -short -timeout 30m $(PKGS)

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

# The FROM-scratch image around the static binary (IMAGE=ncsn:dev); no base image is pulled.
IMAGE ?= ncsn:dev
docker:
	GO=$(GO) ./deploy/docker/build.sh $(IMAGE)

# The compose cluster end to end: worker killed, coordinator restarted, run completed.
# Needs a Docker engine with compose; .ci/e2e skips it (and says so) where none answers.
e2e:
	GO=$(GO) ./deploy/compose/e2e.sh

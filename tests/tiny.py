"""One tiny config for every registered name of every registry kind (timm-style tests follow the registry).

``test_contracts.py`` fails when a registered name has no entry here, so a new family is not done until it has
one. Entries are plain data: a component's config mapping (``name`` excluded), or for generators the sections of
a whole run config (tokenizer, generator, objective) on 16x16 digits. ``None`` marks a name whose contract needs
something CI cannot make (DINOv2 weights), with the reason beside it.
"""

from __future__ import annotations

# a VQGAN conv net small enough to build and run in milliseconds (f2: 16x16 images -> 8x8 tokens)
NET = {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [], "mid_attn": False, "z_channels": 8,
       "norm_groups": 8}  # fmt: skip
VQ_TOKENIZER = {"name": "vqgan", "net": NET, "embed_dim": 4, "quantizer": {"name": "vq", "codebook_size": 32},
                "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
MSVQ_TOKENIZER = {"name": "msvq-vae", "net": NET, "embed_dim": 4,
                  "quantizer": {"name": "msvq", "scales": [1, 2, 4, 8], "vq": {"codebook_size": 32}},
                  "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
FLEXVQ_TOKENIZER = {"name": "flexvq", "net": NET, "embed_dim": 4, "quantizer": {"name": "vq", "codebook_size": 32},
                    "scales": [1, 2, 4, 8], "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
RQ_TOKENIZER = {"name": "rqvae", "net": NET, "embed_dim": 4, "quantizer": {"name": "rvq", "depth": 2, "vq": {"codebook_size": 16}},
                "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
DATA = {"name": "digits", "resolution": 16}
# OmniTokenizer at 16x16: patch 4 -> 4x4 tokens, a global and a 2x2-window spatial block, one causal temporal block
OMNI = {"patch": 4, "temporal_patch": 2, "width": 32, "num_heads": 2, "encoder_blocks": "tw", "decoder_blocks": "tw",
        "temporal_depth": 1, "window": 2, "code_dim": 4, "loss": {"perceptual": "none"}}  # fmt: skip
VIT = {"width": 32, "depth": 1, "num_heads": 2}
TITOK_TOKENIZER = {"name": "titok", "patch_size": 4, "num_tokens": 8, "encoder": VIT, "decoder": VIT, "token_size": 4,
                   "quantizer": {"name": "vq", "codebook_size": 32, "l2_norm": True},
                   "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
FLEXTOK_TOKENIZER = {"name": "flextok", "patch_size": 2, "num_registers": 8, "encoder": VIT,
                     "decoder": {"hidden_size": 32, "depth": 1, "num_heads": 2, "patch_size": 2}, "levels": [5, 5, 5],
                     "decode_steps": 2}  # fmt: skip

TINY: dict[str, dict[str, dict | None]] = {
    "dataset": {
        "digits": {"resolution": 16},
        "openmoji": {"resolution": 16, "skin_tones": False},
        "moving-openmoji": {"resolution": 16, "frames": 3, "clips": 8, "limit": 48},
        "joint": {
            "resolution": 16,
            "main": {"name": "moving-openmoji", "frames": 3, "clips": 8, "limit": 48},
            "extra": {"name": "digits"},
        },
        "imagefolder": {"resolution": 16, "num_classes": 0},  # root: a folder the test writes
        "videofolder": {"resolution": 16, "frames": 3},  # root: clips the test writes
        "shards": {"resolution": 16},  # root: shards the test packs
        "token-cache": {"resolution": 16},  # path: a cache the test writes
    },
    "tokenizer": {
        "pixels": {"patch": 2},
        "vqgan": {k: v for k, v in VQ_TOKENIZER.items() if k != "name"},
        "rqvae": {k: v for k, v in RQ_TOKENIZER.items() if k != "name"},
        "msvq-vae": {k: v for k, v in MSVQ_TOKENIZER.items() if k != "name"},
        "flexvq": {k: v for k, v in FLEXVQ_TOKENIZER.items() if k != "name"},
        "kl-vae": {"net": {**NET, "ch_mult": [1, 2, 2]}, "embed_dim": 4, "loss": {"perceptual": "none"}},
        "va-vae": {
            "net": {**NET, "ch_mult": [1, 2, 2]},
            "embed_dim": 4,
            "loss": {"perceptual": "none"},
            "vf": {"encoder": {"name": "random-conv", "dim": 32, "layers": 2}},
        },  # fmt: skip
        "vitok": {
            "patch": 4,
            "channels": 4,
            "encoder": {"depth": 1, "width": 32, "num_heads": 2},
            "decoder": {"depth": 1, "width": 32, "num_heads": 2},
            "loss": {"perceptual": "none"},
        },  # fmt: skip
        "omnitokenizer": {**OMNI, "quantizer": {"name": "vq", "codebook_size": 32, "l2_norm": True}},
        "omnitokenizer-kl": OMNI,
        "sd-vae": {"scaling_factor": 0.5},  # path: a random diffusers AutoencoderKL the test saves
        "run": {},  # path: a tokenizer folder the test saves
        "titok": {k: v for k, v in TITOK_TOKENIZER.items() if k != "name"},
        "flextok": {k: v for k, v in FLEXTOK_TOKENIZER.items() if k != "name"},
    },
    "quantizer": {
        "vq": {"codebook_size": 32},
        "fsq": {"levels": [5, 4, 3]},
        "lfq": {"bits": 4, "entropy_group_bits": 4},
        "rvq": {"depth": 3, "vq": {"codebook_size": 16}},
        "msvq": {"scales": [1, 2, 4], "vq": {"codebook_size": 16}},
    },
    "image_encoder": {
        "random-conv": {"dim": 32, "layers": 2},
        "inception": {},
        "dinov2": None,  # needs DINOv2 weights on disk, which CI does not have
    },
    "generator": {
        "dimr": {
            "tokenizer": {"name": "pixels", "patch": 2},
            "generator": {"dims": [16, 8], "hidden_dims": [32, 16], "depths": [1, 1], "num_heads": 2},
            "objective": {"name": "flow"},
            "sample": {"steps": 3, "cfg": 2.0},
        },  # fmt: skip
        "dit": {
            "tokenizer": {"name": "pixels", "patch": 2},
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 2},
            "objective": {"name": "flow"},
            "sample": {"steps": 3, "cfg": 2.0},
        },  # fmt: skip
        "lamamba": {
            "tokenizer": {"name": "pixels", "patch": 2},
            "generator": {"dim": 8, "depths": [1, 1], "bottleneck_depth": 1, "num_heads": 2, "window_size": 4},
            "objective": {"name": "flow"},
            "sample": {"steps": 3, "cfg": 2.0},
        },  # fmt: skip
        "maskgit": {
            "tokenizer": VQ_TOKENIZER,
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "sample": {"steps": 4, "cfg": 2.0},
        },  # fmt: skip
        "enat": {
            "tokenizer": VQ_TOKENIZER,
            "generator": {"encoder_depth": 1, "decoder_depth": 1, "hidden_size": 32, "num_heads": 2},
            "sample": {"steps": 4, "cfg": 2.0},
        },  # fmt: skip
        "gpt": {
            "tokenizer": VQ_TOKENIZER,
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "sample": {"cfg": 2.0, "top_k": 8},
        },  # fmt: skip
        "resgen": {
            "tokenizer": RQ_TOKENIZER,
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2, "components": 2},
            "sample": {"steps": 4, "cfg": 2.0},
        },  # fmt: skip
        "var": {
            "tokenizer": MSVQ_TOKENIZER,
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "sample": {"cfg": 1.5, "top_k": 8},
        },  # fmt: skip
        "flexvar": {
            "tokenizer": FLEXVQ_TOKENIZER,
            "generator": {"depth": 1, "hidden_size": 32, "num_heads": 2},
            "sample": {"cfg": 1.5, "top_k": 8},
        },  # fmt: skip
    },
    "objective": {"flow": {}, "rfpp": {}, "ctm": {"solver_steps": 4}, "ddpm": {}},  # flow, ddpm: over every backbone
    "sampler": {name: {} for name in ("euler", "heun", "dpm++", "unipc", "flowturbo", "diffusers-euler", "rfpp")},
    "evaluator": {"fid": {}, "kid": {}, "pr": {}, "is": {}},
    "refiner": {"flowturbo": {"depth": 1, "hidden_size": 16, "num_heads": 2, "patch_size": 2}},
    # importers are tested against the public code's tensors in tests/test_*_import.py
    "task": {
        "generator": {"preset": "smoke"},
        "tokenizer": {"preset": "smoke-vq"},
        "flowturbo-refiner": {"preset": "flowturbo-refiner"},
        "titok": {"preset": "imagenet256/titok-s-128"},
        "reflow": {"preset": "smoke-reflow"},
        "slimflow": {"preset": "smoke-slimflow"},
        "ctm": {"preset": "smoke-ctm"},
    },  # fmt: skip
    # importers and benchmarks: the arguments their parser must accept (their runs are tested in their own files)
    "importer": {
        "var": {"argv": ["x.pth", "--out", "r", "--vae", "v.pth"]},
        "var-vqvae": {"argv": ["x.pth", "--out", "r", "--scales", "1,2,3", "--norm-groups", "4"]},
        "va-vae": {"argv": ["x.pt", "--out", "r", "--stats", "latents_stats.pt"]},  # tests/test_vavae_import.py
        "maskgit-vqgan": {"argv": ["x.bin", "--out", "r"]},  # tests/test_maskgit_vqgan_import.py
        "flexvar": {"argv": ["x.pth", "--out", "r", "--vae", "FlexVAE.pth"]},  # tests/test_flexvar_import.py
        "titok": {"argv": ["model.safetensors", "--out", "r"]},  # tests/test_titok_import.py imports a tiny TiTok
        "titok-maskgit": {"argv": ["model.safetensors", "--out", "r", "--tokenizer", "t"]},  # test_titok_maskgit_import
        "omnitokenizer": {"argv": ["x.ckpt", "--out", "r", "--resolution", "16"]},  # tests/test_omnitok_import.py
        **{name: {"argv": ["x.pt", "--out", "r"]} for name in ("dit", "diffusers-dit", "lightningdit", "llamagen-gpt",
                                                               "llamagen-vq", "sd-vae", "sit")},  # fmt: skip
    },
    "benchmark": {
        "train": {"argv": ["--seconds", "1", "--family", "gpt"]},
        "gpt": {"argv": ["--seconds", "1"]},
        "sample": {"argv": ["--run", "r", "--n", "8"]},
        "eval": {"argv": ["--n", "8"]},
        "zoo": {"argv": ["--tiny", "--n", "8", "--steps", "2"]},  # tests/test_zoo.py runs it
    },
}


def generator_run(name: str) -> dict:
    """The run-config mapping of a generator's tiny entry (digits 16x16, 4 steps of training data)."""
    entry = TINY["generator"][name]
    gen = {"name": name, **entry["generator"]}
    data = {"data": DATA, "tokenizer": entry["tokenizer"], "generator": gen, "sample": entry.get("sample", {})}
    if "objective" in entry:
        data["objective"] = entry["objective"]
    return data

"""The worlds' preparation, a layer above model/: the tiny world's tokenizer and two trained models
(tiny.py), the SmolLM2 alignment adapter's training (smollm2_align.py), and the model specs
(`tiny:aligned`, `smollm2:base`, a path) turned into local folders, preparing on first use (specs.py)."""

"""trainer: the nightly sleep — dataset, LoRA training, evaluation, promotion."""

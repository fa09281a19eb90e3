"""The models the tool serves and trains: checks of a model folder or hub id (model_check),
the embedded tiny model (tiny_model) and the converted SmolLM2 (smollm2_model)."""

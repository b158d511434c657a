"""GLM specifics: THUDM checkpoints loaded natively, their tokenizers read exactly, prompt formats, conversion."""

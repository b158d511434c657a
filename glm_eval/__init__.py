"""glm-eval: evaluate GLM / ChatGLM (and any causal LM) on the ChatGLM3 README benchmarks."""

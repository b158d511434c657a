"""The vocabulary every layer shares: the request/response protocol, typed configs, averaging and statistics,
files and logging. Imports nothing else from glm_eval."""

"""Everything that answers requests (core.protocol.Backend): transformers weights loaded here (slot generator,
log-likelihood scorer) and HTTP endpoints. New engines (vLLM) go here."""

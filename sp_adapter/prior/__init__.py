"""Layer 1: the semantic prior as plain ``nn.Module``s: config, teacher F_P, student F_S +
CLC, MLA/SAT embedding, HCL loss. Knows nothing of the network it will be attached to."""

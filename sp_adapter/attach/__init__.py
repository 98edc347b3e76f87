"""Layer 2: attaching the prior to a network: levels, the hook, the attachment state,
``wrap``/``unwrap``/``prior_loss``, automatic levels, fit checks, optimisers."""

"""Ad variants in batch: one spec, many variants in every platform format, ranked and overlaid."""

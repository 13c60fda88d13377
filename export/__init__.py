"""Export of tfp_bcnn models: SavedModel, TFLite, and a TF-free runtime."""

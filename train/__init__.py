"""weed-detector training side: fine-tune, evaluate and export model bundles for `edge`."""

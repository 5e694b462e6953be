"""Reads of the catalogue, one module per concern; writes live in `catalog.services`.

Import the module you need: `from catalog.selectors import catalogue as catalogue_selectors`.

- `catalogue`: categories and the tree, listings anyone or their seller may see, photos.
- `suggestions`: what the model suggests for a listing (the seller's panel, the API).
- `review`: the review queue, a listing's audit trail, labelled photos for training.
- `registry`: model versions, comparisons, activations and training runs.
- `bulk`: bulk reclassification jobs and their progress.
"""

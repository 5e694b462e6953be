"""Training heads and the backbone's tail; needs scikit-learn and scipy (torch for the tail).

One recipe, in small parts: ``folds`` (stratified cross-validation folds) → ``logistic`` (the
multinomial logistic regression and its C chosen by cross-validation) → ``temperature``
(calibration of the softmax) → ``gate`` (class centroids and the in-domain gate) → ``probe``
(those steps together: a linear probe on frozen embeddings). ``candidate`` trains a candidate
head for the model registry from labelled backbone outputs, with auto-accept ``thresholds`` from
out-of-fold predictions; ``folder`` fits the head on a folder of labelled photos
(``python -m classifier train``); ``activations`` and ``tail`` tune the backbone's last blocks
(``python -m classifier finetune``).
"""

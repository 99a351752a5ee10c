"""``seg-unet``: federated segmentation of generated cardiac-like slices (``seg_unet.py``), its
phantom generator (``phantom.py``), U-Net (``unet.py``) and Dice metrics and loss (``dice.py``)."""

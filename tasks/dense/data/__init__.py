"""Dense DataModules: the shared base (paired augmentation), the digits-derived segmentation
set, the generated landmark set, CelebAMask-HQ and WFLW."""

"""DataModules. Every one yields [0, 1] images, knows its normalisation (`mean`, `std`) and
class count, and fails on a missing folder with the expected layout."""

from tasks.data.augment import RandomAffine
from tasks.data.base import ImageDataModule
from tasks.data.cifar import CIFARDataModule
from tasks.data.digits import DigitsDataModule, load_digit_images
from tasks.data.fashion import FashionMNISTDataModule
from tasks.data.folder import ImageFolderDataModule, TinyImageNetDataModule
from tasks.data.toolbox import Compose, MixupCutmix, RandAugment, RandomErasing

__all__ = [
    "RandomAffine",
    "ImageDataModule",
    "CIFARDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "load_digit_images",
    "ImageFolderDataModule",
    "TinyImageNetDataModule",
    "Compose",
    "MixupCutmix",
    "RandAugment",
    "RandomErasing",
]

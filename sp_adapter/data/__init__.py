"""Data for training and evaluating deblurring: severe-blur synthesis on built-in photos,
and paired folder datasets in the GoPro, HIDE and RealBlur layouts."""

from sp_adapter.data.blur import (
    MILD,
    PRESETS,
    SEVERE,
    BlurConfig,
    blur_image,
    blur_preset,
    camera_shake_kernel,
)
from sp_adapter.data.paired import (
    GoProDataset,
    HIDEDataset,
    PairedImageDataset,
    RealBlurDataset,
    gopro_pairs,
    hide_pairs,
    read_image,
    realblur_pairs,
)
from sp_adapter.data.synthetic import SyntheticBlurDataset
from sp_adapter.photos import (
    GREY_PHOTOS,
    TEST_PHOTOS,
    WHEEL_PHOTOS,
    available_photos,
    extra_photos,
    grey_photos,
    list_photos,
    load_photo,
    photo_array,
    photo_names,
)

__all__ = [
    "GREY_PHOTOS",
    "MILD",
    "PRESETS",
    "SEVERE",
    "TEST_PHOTOS",
    "WHEEL_PHOTOS",
    "BlurConfig",
    "GoProDataset",
    "HIDEDataset",
    "PairedImageDataset",
    "RealBlurDataset",
    "SyntheticBlurDataset",
    "available_photos",
    "blur_image",
    "blur_preset",
    "camera_shake_kernel",
    "extra_photos",
    "gopro_pairs",
    "grey_photos",
    "hide_pairs",
    "list_photos",
    "load_photo",
    "photo_array",
    "photo_names",
    "read_image",
    "realblur_pairs",
]

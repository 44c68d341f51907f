"""On-disk stores of prepared dataset parts (region features in HDF5) and the converters into them."""

"""`python -m keras_hebb._native`: builds the native op (see __init__)."""

import sys

from keras_hebb import _native

try:
    print(_native.build())
except RuntimeError as error:
    sys.exit(str(error))

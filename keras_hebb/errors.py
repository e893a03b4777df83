"""The errors keras_hebb raises that a caller may want to catch by type.

`InvalidArgument` is the `ValueError` of every argument check ("Invalid
value for `name`: expected ... Received: ..."), with the argument's name,
the value and what was expected as attributes: a program that validates
its own config through keras_hebb (the training program does) reports
them under its own key names.
"""

from keras_hebb._checks import InvalidArgument

__all__ = ["InvalidArgument"]

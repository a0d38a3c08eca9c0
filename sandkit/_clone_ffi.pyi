# Types of the cffi extension module that setup.py builds from _clone.c (see _build_clone.py);
# the C declarations are in _clone.h.

from cffi import FFI

class Lib:
    def sk_clone(self, a: FFI.CData, out: FFI.CData, /) -> int: ...
    def sk_release(self, c: FFI.CData, /) -> None: ...

ffi: FFI
lib: Lib

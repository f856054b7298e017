"""Stand-ins MST's official code needs beyond ../shared/reference/official/shims.py (test-only): it imports
mmengine (registries, file and logging helpers; nothing of it runs in its forward) and, on branch mst-448,
``flash_attn.flash_attn_func`` at module level (unused in its forward). Both resolve to the shims' permissive
modules: names resolve, calls fail loudly."""
import importlib.abc
import importlib.machinery
import sys
import types


def install(official: str, folder: str) -> None:
    """:func:`clicks.use_reference` for MST's ``folder`` (``mst`` or ``mst_448``) plus the stand-ins."""
    from clicks import use_reference

    use_reference(official, folder)
    import shims

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] in ("mmengine", "flash_attn"):
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            module = shims._Permissive(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())
    sys.modules.setdefault("visdom", types.ModuleType("visdom"))

"""What the remote-code tests share."""

# Prepended to the code of a subprocess to make `hf_swin_ddpm` unimportable there, as on a machine without the
# package: what loads then loads as remote code.
BLOCK_PACKAGE = """
import sys
class BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name == "hf_swin_ddpm" or name.startswith("hf_swin_ddpm."):
            raise ImportError("hf_swin_ddpm is not installed here")
        return None
sys.meta_path.insert(0, BlockPackage())
"""

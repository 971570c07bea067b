"""The one error conversion raises: the message names the file, key or setting at fault."""


class ConversionError(Exception):
    """A source that cannot be converted: missing or corrupt files, a layout that is not open_clip's,
    an unknown model name, or an architecture the CLIPModel key map cannot express."""

"""De-identification engine: DICOM PS3.15 Annex E Basic Profile with all its options.

Library entry point::

    from dicomvault.deid import DeidConfig, Option, deidentify
    result = deidentify(dataset, DeidConfig(options=frozenset({Option.RETAIN_UIDS}),
                                            project="LUNG"), keyring.pseudonym_key)
    if result.released:
        result.dataset.save_as(path)
"""

from dicomvault.deid.engine import ActionRecord, DeidResult, deidentify
from dicomvault.deid.options import OPTION_CODES, Option, parse_option
from dicomvault.deid.profile import DeidConfig, build_config, load_profile_file
from dicomvault.deid.pseudonym import MappingRecord, PseudonymKeys

__all__ = [
    "OPTION_CODES",
    "ActionRecord",
    "DeidConfig",
    "DeidResult",
    "MappingRecord",
    "Option",
    "PseudonymKeys",
    "build_config",
    "deidentify",
    "load_profile_file",
    "parse_option",
]

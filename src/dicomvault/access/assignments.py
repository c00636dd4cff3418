"""``AssignmentLookup`` over the access tables (DESIGN.md "Access model").

A ``referring`` principal sees a study when it is on the study's care team
(``access_care_team``) or is its Referring Physician (matched through a keyed
blind-index token of the user's DICOM Person Name, answered by a callable the
archive index provides).  De-identified collections are flagged on the
index's study table, so that test is a callable too.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access.models import CareTeamAssignment, User, split_set
from dicomvault.access.principal import Principal
from dicomvault.index.db import unit_of_work

#: referring-name blind token -> study UIDs whose Referring Physician's Name matches.
ReferringLookup = Callable[[str], frozenset[str]]
DeidentifiedLookup = Callable[[str], bool]


def _never_deidentified(_study_uid: str) -> bool:
    return False


class IndexAssignments:
    """Care team + referring-physician match + de-identified flag."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        is_deidentified: DeidentifiedLookup = _never_deidentified,
        referring_studies: ReferringLookup | None = None,
    ) -> None:
        self._factory = factory
        self._is_deidentified = is_deidentified
        self._referring = referring_studies

    def _user_id(self, principal: Principal) -> str | None:
        return principal.id if principal.kind in ("user", "token") else None

    def assigned_study_uids(self, principal: Principal) -> frozenset[str]:
        """Studies on the principal's care team or referred by them."""
        user_id = self._user_id(principal)
        if user_id is None:
            return frozenset()
        with unit_of_work(self._factory) as session:
            uids = set(session.execute(
                select(CareTeamAssignment.study_uid).where(CareTeamAssignment.user_id == user_id)
            ).scalars())
            token = session.execute(
                select(User.referring_name_token).where(User.id == user_id)
            ).scalar_one_or_none()
        if token and self._referring is not None:
            uids |= self._referring(token)
        return frozenset(uids)

    def owned_patient_key_ids(self, principal: Principal) -> frozenset[str]:
        """For the patient role: the patient records linked to the account."""
        user_id = self._user_id(principal)
        if user_id is None:
            return frozenset()
        with unit_of_work(self._factory) as session:
            text = session.execute(
                select(User.patient_key_ids).where(User.id == user_id)
            ).scalar_one_or_none()
        return split_set(text)

    def is_deidentified_study(self, study_uid: str) -> bool:
        return self._is_deidentified(study_uid)

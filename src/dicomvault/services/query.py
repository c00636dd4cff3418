"""Search: one matching engine for C-FIND (PS3.4 C.6) and QIDO-RS (PS3.18 10.6).

Matching rules (PS3.4 C.2.2.2):

* single value, wildcard (``*``, ``?``), UID list (``\\``-separated), range
  (``A-B``, ``A-``, ``-B`` on dates and times), universal (empty value);
* person names and free-text descriptions match case-insensitively;
* encrypted attributes are pre-filtered through blind-index tokens (exact,
  ``PREFIX*``, and ``*WORD*`` = a name/description word starting with WORD)
  and then verified on the decrypted value, so results are exact.  Patterns
  a token cannot serve (``*SUFFIX``, ``?``) are evaluated on decrypted values
  of the rows the other keys select.  Infix matching inside a word of an
  encrypted attribute is not supported: ``*mit*`` does not find "Smith".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access import permissions as perm
from dicomvault.access.permissions import Scope
from dicomvault.access.policy import Policy, QueryScope, Resource
from dicomvault.access.principal import Principal
from dicomvault.audit import events as ev
from dicomvault.crypto.blind import PREFIX_MAX
from dicomvault.crypto.keyring import Keyring
from dicomvault.errors import InvalidInputError
from dicomvault.index.models import Instance, Patient, SearchToken, Series, Study
from dicomvault.index.phi import PHI_BY_KEYWORD, PhiField, field_aad
from dicomvault.services.auditing import AuditSink, actor, deny_event, refusal
from dicomvault.services.keys import DekCache
from dicomvault.services.types import FindQuery, FindResult

LEVEL_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_PHI_LEVEL = {"patient": "PATIENT", "study": "STUDY", "series": "SERIES"}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DATE_RANGE = re.compile(r"^(\d{8})?-(\d{8})?$")

# keyword -> (level, column, kind); kind: uid | str | date | time | int
PLAIN: dict[str, tuple[str, Any, str]] = {
    "PatientSex": ("PATIENT", Patient.sex, "str"),
    "StudyInstanceUID": ("STUDY", Study.study_uid, "uid"),
    "StudyDate": ("STUDY", Study.study_date, "date"),
    "StudyTime": ("STUDY", Study.study_time, "time"),
    "SeriesInstanceUID": ("SERIES", Series.series_uid, "uid"),
    "Modality": ("SERIES", Series.modality, "str"),
    "SeriesNumber": ("SERIES", Series.series_number, "int"),
    "SeriesDate": ("SERIES", Series.series_date, "date"),
    "SeriesTime": ("SERIES", Series.series_time, "time"),
    "BodyPartExamined": ("SERIES", Series.body_part, "str"),
    "SOPInstanceUID": ("IMAGE", Instance.sop_uid, "uid"),
    "SOPClassUID": ("IMAGE", Instance.sop_class_uid, "uid"),
    "InstanceNumber": ("IMAGE", Instance.instance_number, "int"),
    "NumberOfFrames": ("IMAGE", Instance.number_of_frames, "int"),
    "Rows": ("IMAGE", Instance.rows, "int"),
    "Columns": ("IMAGE", Instance.columns, "int"),
}
#: Matching keys that are computed (PS3.4 C.6.1.1.x optional keys) or special.
SPECIAL = {"ModalitiesInStudy": "STUDY", "QueryRetrieveLevel": "PATIENT",
           "SOPClassesInStudy": "STUDY"}
#: Return-only keys per level (counts and transfer syntax).
RETURN_ONLY = {
    "NumberOfPatientRelatedStudies": "PATIENT", "NumberOfPatientRelatedSeries": "PATIENT",
    "NumberOfPatientRelatedInstances": "PATIENT", "NumberOfStudyRelatedSeries": "STUDY",
    "NumberOfStudyRelatedInstances": "STUDY", "NumberOfSeriesRelatedInstances": "SERIES",
    "AvailableTransferSyntaxUID": "IMAGE", "RetrieveAETitle": "PATIENT",
    "InstanceAvailability": "PATIENT", "SpecificCharacterSet": "PATIENT",
}


_PHI_OF_LEVEL: dict[str, tuple[PhiField, ...]] = {
    name: tuple(f for f in PHI_BY_KEYWORD.values() if f.level == name)
    for name in ("patient", "study", "series")
}
#: Plain result columns per entity: (label prefix, entity, attributes); encrypted PHI
#: columns are labelled ``<level>_<column>``.
_RESULT_PARTS: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("p", Patient, ("id", "key_id", "wrapped_dek", "sex")),
    ("s", Study, ("study_uid", "study_date", "study_time", "modalities", "num_series",
                  "num_instances")),
    ("e", Series, ("series_uid", "modality", "series_number", "series_date", "series_time",
                   "body_part", "num_instances")),
    ("i", Instance, ("sop_uid", "sop_class_uid", "instance_number", "number_of_frames", "rows",
                     "columns", "transfer_syntax_uid")),
)
_PATIENT_COUNTS = (
    select(func.count(Study.id.distinct()), func.count(Series.id.distinct()),
           func.coalesce(func.sum(Series.num_instances), 0))
    .select_from(Study).outerjoin(Series, Series.study_id == Study.id)
    .where(Study.patient_id == bindparam("b_patient"))
)


@cache
def _result_columns(level: str) -> tuple[Any, ...]:
    """The columns a result row at ``level`` is built from (its level and those above)."""
    depth = LEVEL_ORDER.index(level)
    cols: list[Any] = []
    for (prefix, entity, attrs), level_name in zip(_RESULT_PARTS[: depth + 1],
                                                   ("patient", "study", "series", "image"),
                                                   strict=False):
        cols.extend(getattr(entity, a).label(f"{prefix}_{a}") for a in attrs)
        for field in _PHI_OF_LEVEL.get(level_name, ()):
            cols.append(getattr(entity, field.column).label(f"{level_name}_{field.column}"))
    return tuple(cols)


def supported_keywords(level: str) -> set[str]:
    """Keywords matchable or returned at ``level`` (incl. higher levels)."""
    depth = LEVEL_ORDER.index(level)
    allowed = set(LEVEL_ORDER[: depth + 1])
    keys = {k for k, (lvl, _c, _t) in PLAIN.items() if lvl in allowed}
    keys |= {f.keyword for f in PHI_BY_KEYWORD.values() if _PHI_LEVEL[f.level] in allowed}
    keys |= {k for k, lvl in SPECIAL.items() if lvl in allowed}
    keys |= {k for k, lvl in RETURN_ONLY.items() if lvl == level or lvl == "PATIENT"}
    return keys


@lru_cache(maxsize=512)
def _wildcard_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE if case_insensitive else 0 | re.DOTALL)


def wildcard_match(pattern: str, value: str | None, *, case_insensitive: bool = False) -> bool:
    """PS3.4 C.2.2.2.4 wildcard matching (``*`` any run, ``?`` one character)."""
    if value is None:
        return False
    if "*" not in pattern and "?" not in pattern:
        return (pattern.casefold() == value.casefold()) if case_insensitive else pattern == value
    return bool(_wildcard_regex(pattern, case_insensitive).match(value))


#: One matching condition's shape, hashable (its values go to the statement's parameters):
#: a kind and what selects the columns, e.g. ``("range", "StudyDate", True, False)``.
_Shape = tuple[Any, ...]


class _Plan:
    """A query's conditions as shapes plus their values; statements are cached per shape,
    so a repeated query form skips statement construction and cache-key generation."""

    def __init__(self) -> None:
        self.shapes: list[_Shape] = []
        self.params: dict[str, Any] = {}

    def add(self, shape: _Shape, *values: Any) -> None:
        index = len(self.shapes)
        self.shapes.append(shape)
        for position, value in enumerate(values):
            self.params[f"v{index}_{position}"] = value


def _date_condition(plan: _Plan, keyword: str, value: str) -> None:
    value = value.replace(".", "")  # ACR-NEMA style dates
    if _DATE.match(value):
        plan.add(("eq", keyword), value)
        return
    m = _DATE_RANGE.match(value)
    if not m or not (m.group(1) or m.group(2)):
        raise InvalidInputError(f"{keyword}: not a date or date range (YYYYMMDD[-YYYYMMDD])")
    lo, hi = m.group(1), m.group(2)
    plan.add(("range", keyword, bool(lo), bool(hi)), *(v for v in (lo, hi) if v))


def _time_condition(plan: _Plan, keyword: str, value: str) -> None:
    value = value.replace(":", "")
    if "-" in value:
        lo, _, hi = value.partition("-")
        if (lo and not _TIME.match(lo)) or (hi and not _TIME.match(hi)) or not (lo or hi):
            raise InvalidInputError(f"{keyword}: not a time range")
        if hi:
            hi = hi + "999999"[: max(0, 13 - len(hi))]
        plan.add(("range", keyword, bool(lo), bool(hi)), *(v for v in (lo, hi) if v))
        return
    if not _TIME.match(value):
        raise InvalidInputError(f"{keyword}: not a time")
    plan.add(("like", keyword), value + "%")


def _like(pattern: str) -> str:
    return pattern.replace("%", r"\%").replace("_", r"\_").replace("*", "%").replace("?", "_")


def _plain_condition(plan: _Plan, keyword: str, kind: str, value: str) -> None:
    if kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if not uids or any(len(u) > 64 or not re.match(r"^[0-9.]+$", u) for u in uids):
            raise InvalidInputError(f"{keyword}: not a UID list")
        if len(uids) > 1:
            plan.add(("in", keyword), uids)
        else:
            plan.add(("eq", keyword), uids[0])
    elif kind == "date":
        _date_condition(plan, keyword, value)
    elif kind == "time":
        _time_condition(plan, keyword, value)
    elif kind == "int":
        try:
            plan.add(("eq", keyword), int(value))
        except ValueError:
            raise InvalidInputError(f"{keyword}: not an integer") from None
    else:
        values = [v for v in value.split("\\") if v]
        wild = tuple("*" in v or "?" in v for v in values)
        plan.add(("any", keyword, wild), *(_like(v) if w else v for v, w in zip(values, wild, strict=True)))


_TOKEN_ROW = {"patient": Patient.id, "study": Study.id, "series": Series.id}


def _condition(index: int, shape: _Shape, level: str) -> ColumnElement[bool]:
    """The SQL of one condition shape; its values bind as ``v<index>_<position>``."""
    def value(position: int = 0, expanding: bool = False) -> Any:
        return bindparam(f"v{index}_{position}", expanding=expanding)

    kind = shape[0]
    column: Any = PLAIN[shape[1]][1] if kind in ("eq", "in", "range", "like", "any") else None
    if kind == "eq":
        return cast(ColumnElement[bool], column == value())
    if kind == "in":
        return cast(ColumnElement[bool], column.in_(value(expanding=True)))
    if kind == "range":
        conds, position = [], 0
        if shape[2]:
            conds.append(column >= value(position))
            position += 1
        if shape[3]:
            conds.append(column <= value(position))
        return and_(*conds)
    if kind == "like":
        return cast(ColumnElement[bool], column.like(value(), escape="\\"))
    if kind == "any":
        return or_(*[column.like(value(i), escape="\\") if wild else column == value(i)
                     for i, wild in enumerate(shape[2])])
    if kind == "modalities":
        return exists().where(Series.study_id == Study.id,
                              or_(*[Series.modality.like(value(i), escape="\\") for i in range(shape[1])]))
    if kind == "sopclasses":
        return exists().where(Series.study_id == Study.id, Instance.series_id == Series.id,
                              Instance.sop_class_uid.in_(value(expanding=True)))
    if kind == "token":
        return exists().where(SearchToken.token == value(), SearchToken.level == shape[1],
                              SearchToken.row_id == _TOKEN_ROW[shape[1]])
    if kind == "scope-own":
        return Patient.key_id.in_(value(expanding=True))
    if kind == "scope-none":
        return Patient.id == -1
    study_cond = (Study.study_uid.in_(value(expanding=True)) if kind == "scope-assigned"
                  else Study.deidentified.is_(True))
    if level == "PATIENT":
        return exists().where(Study.patient_id == Patient.id, study_cond)
    return study_cond


@lru_cache(maxsize=512)
def _cached_statement(level: str, shapes: tuple[_Shape, ...], paged: bool) -> Select[Any]:
    """The statement for a query shape; ``paged`` adds bound OFFSET/LIMIT."""
    stmt = select(*_result_columns(level))
    if level == "PATIENT":
        order = Patient.id
    elif level == "STUDY":
        stmt = stmt.select_from(Study).join(Patient, Study.patient_id == Patient.id)
        order = Study.id
    elif level == "SERIES":
        stmt = (stmt.select_from(Series).join(Study, Series.study_id == Study.id)
                .join(Patient, Study.patient_id == Patient.id))
        order = Series.id
    else:
        stmt = (stmt.select_from(Instance).join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .join(Patient, Study.patient_id == Patient.id))
        order = Instance.id
    conds: list[ColumnElement[bool]] = [Patient.wrapped_dek.is_not(None)]
    conds.extend(_condition(i, shape, level) for i, shape in enumerate(shapes))
    stmt = stmt.where(and_(*conds)).order_by(order)
    if paged:
        stmt = stmt.offset(bindparam("b_offset")).limit(bindparam("b_limit"))
    return stmt


def _is_word_pattern(field: PhiField, pattern: str) -> bool:
    """``*WORD*`` on a person name or description: a word starting with WORD."""
    return (field.kind in ("pn", "text") and len(pattern) > 2 and pattern.startswith("*")
            and pattern.endswith("*") and not re.search(r"[*?\s^]", pattern[1:-1]))


@dataclass
class _PhiFilter:
    field: PhiField
    pattern: str  # normalised


class Searcher:
    """Implements ``ArchiveService.find``."""

    def __init__(self, factory: sessionmaker[Session], keyring: Keyring, deks: DekCache,
                 policy: Policy, audit: AuditSink, max_results: int = 10_000) -> None:
        self._factory = factory
        self._engine = cast(Engine, factory.kw["bind"])
        self._keyring = keyring
        self._deks = deks
        self._policy = policy
        self._audit = audit
        self._max = max_results

    def find(self, principal: Principal, query: FindQuery, *, door: str) -> FindResult:
        """Match ``query`` within the principal's scope; audited as Query (110112)."""
        if query.level not in LEVEL_ORDER:
            raise InvalidInputError("unknown query level")
        decision = self._policy.authorize(principal, perm.STUDY_SEARCH, Resource("study"))
        if not decision.allowed:
            self._audit.append([deny_event(principal, door, perm.STUDY_SEARCH, None)])
            raise refusal(decision)
        scope = self._policy.query_scope(principal, perm.STUDY_SEARCH)
        if query.limit is not None and query.limit < 0 or query.offset < 0:
            raise InvalidInputError("limit and offset must not be negative")
        plan, phi_filters, post_only = self._plan(query, scope)
        limit = min(query.limit if query.limit is not None else self._max, self._max)
        stmt = _cached_statement(query.level, tuple(plan.shapes), not post_only)
        # Plain columns on a Core connection: no ORM identity map or entity loading.
        with self._engine.connect() as conn:
            if post_only:
                rows = conn.execute(stmt, plan.params).all()
                matched = [r for r in (self._row(conn, query.level, r._mapping) for r in rows)
                           if r is not None and self._verify(r, phi_filters)]
                page = matched[query.offset: query.offset + limit + 1]
            else:
                params = {**plan.params, "b_offset": query.offset, "b_limit": limit + 1}
                rows = conn.execute(stmt, params).all()
                page = [r for r in (self._row(conn, query.level, r._mapping) for r in rows)
                        if r is not None and self._verify(r, phi_filters)]
        capped = len(page) > limit
        page = page[:limit]
        for row in page:
            row.pop("_key_id", None)
        self._audit.append([self._query_event(principal, door, query, len(page))])
        return FindResult(rows=page, capped=capped)

    # -- statement building -------------------------------------------------
    def _plan(self, query: FindQuery, scope: QueryScope) -> tuple[_Plan, list[_PhiFilter], bool]:
        depth = LEVEL_ORDER.index(query.level)
        plan = _Plan()
        self._scope_conditions(plan, scope)
        phi_filters: list[_PhiFilter] = []
        post_only = False
        allowed_levels = set(LEVEL_ORDER[: depth + 1])
        for keyword, raw in query.filters.items():
            value = (raw or "").strip()
            if value in ("", "*"):
                continue  # universal matching
            if len(value) > 1024:
                raise InvalidInputError(f"{keyword}: matching value too long")
            if keyword in PLAIN:
                lvl, _column, kind = PLAIN[keyword]
                if lvl not in allowed_levels:
                    continue
                _plain_condition(plan, keyword, kind, value)
            elif keyword == "ModalitiesInStudy" and "STUDY" in allowed_levels:
                mods = [_like(m) for m in value.split("\\") if m]
                plan.add(("modalities", len(mods)), *mods)
            elif keyword == "SOPClassesInStudy" and "STUDY" in allowed_levels:
                plan.add(("sopclasses",), [u for u in value.split("\\") if u])
            elif keyword in PHI_BY_KEYWORD:
                field = PHI_BY_KEYWORD[keyword]
                if _PHI_LEVEL[field.level] not in allowed_levels:
                    continue
                if field.kind == "date" and "-" in value:
                    # Encrypted dates (birth date): ranges are evaluated on decrypted values.
                    phi_filters.append(_PhiFilter(field, value))
                    post_only = True
                    continue
                pattern = field.normalise(value)
                phi_filters.append(_PhiFilter(field, pattern))
                token = self._token(field, pattern)
                if token is None or len(pattern.strip("*")) > PREFIX_MAX:
                    # No token, or a capped one: verification may drop rows, so page after it.
                    post_only = True
                if token is not None:
                    plan.add(("token", field.level), token)
            # Other keys: not supported for matching; ignored (PS3.4 C.2.2.1.1 optional keys).
        return plan, phi_filters, post_only

    @staticmethod
    def _scope_conditions(plan: _Plan, scope: QueryScope) -> None:
        if scope.scope is Scope.ALL:
            return
        if scope.scope is Scope.ASSIGNED:
            plan.add(("scope-assigned",), sorted(scope.study_uids))
        elif scope.scope is Scope.OWN:
            plan.add(("scope-own",), sorted(scope.patient_key_ids))
        elif scope.scope is Scope.DEIDENTIFIED:
            plan.add(("scope-deidentified",))
        else:
            plan.add(("scope-none",))

    def _token(self, field: PhiField, pattern: str) -> str | None:
        """The blind-index token that pre-filters ``pattern``, if one can."""
        blind = self._keyring.blind
        name = field.token_field
        has_wild = "*" in pattern or "?" in pattern
        if not has_wild:
            return blind.exact(name, pattern)
        if pattern.endswith("*") and "*" not in pattern[:-1] and "?" not in pattern and len(pattern) > 1:
            return blind.prefix(name, pattern[:-1])
        if _is_word_pattern(field, pattern):
            return blind.word_prefix(name, pattern[1:-1])
        return None

    # -- results ------------------------------------------------------------
    def _row(self, conn: Connection, level: str, row: RowMapping) -> dict[str, object] | None:
        dek = self._deks.get(row["p_key_id"], row["p_wrapped_dek"])
        if dek is None:
            return None
        out: dict[str, object] = {"_key_id": row["p_key_id"]}

        def decrypt(uid: str, level_name: str) -> None:
            for field in _PHI_OF_LEVEL[level_name]:
                out[field.keyword] = dek.open_text(row[f"{level_name}_{field.column}"],
                                                   field_aad(field, uid))

        decrypt(row["p_key_id"], "patient")
        out["PatientSex"] = row["p_sex"]
        if level == "PATIENT":
            counts = conn.execute(_PATIENT_COUNTS, {"b_patient": row["p_id"]}).one()
            out["NumberOfPatientRelatedStudies"] = counts[0]
            out["NumberOfPatientRelatedSeries"] = counts[1]
            out["NumberOfPatientRelatedInstances"] = int(counts[2])
            return out
        study_uid = row["s_study_uid"]
        decrypt(study_uid, "study")
        out.update({
            "StudyInstanceUID": study_uid, "StudyDate": row["s_study_date"],
            "StudyTime": row["s_study_time"],
            "ModalitiesInStudy": [m for m in row["s_modalities"].split("\\") if m],
            "NumberOfStudyRelatedSeries": row["s_num_series"],
            "NumberOfStudyRelatedInstances": row["s_num_instances"],
        })
        if level == "STUDY":
            return out
        series_uid = row["e_series_uid"]
        decrypt(series_uid, "series")
        out.update({
            "SeriesInstanceUID": series_uid, "Modality": row["e_modality"],
            "SeriesNumber": row["e_series_number"], "SeriesDate": row["e_series_date"],
            "SeriesTime": row["e_series_time"], "BodyPartExamined": row["e_body_part"],
            "NumberOfSeriesRelatedInstances": row["e_num_instances"],
        })
        if level == "SERIES":
            return out
        out.update({
            "SOPInstanceUID": row["i_sop_uid"], "SOPClassUID": row["i_sop_class_uid"],
            "InstanceNumber": row["i_instance_number"], "NumberOfFrames": row["i_number_of_frames"],
            "Rows": row["i_rows"], "Columns": row["i_columns"],
            "AvailableTransferSyntaxUID": row["i_transfer_syntax_uid"],
        })
        return out

    @staticmethod
    def _verify(row: dict[str, object], filters: list[_PhiFilter]) -> bool:
        for flt in filters:
            value = row.get(flt.field.keyword)
            if flt.field.kind == "date" and "-" in flt.pattern:
                lo, _, hi = flt.pattern.partition("-")
                if not isinstance(value, str) or (lo and value < lo) or (hi and value > hi):
                    return False
                continue
            norm = flt.field.normalise(value) if isinstance(value, str) else None
            if norm is not None and _is_word_pattern(flt.field, flt.pattern):
                # *WORD*: a word of the value starts with WORD (see module docstring).
                if not any(w.startswith(flt.pattern[1:-1]) for w in flt.field.words(norm)):
                    return False
                continue
            if not wildcard_match(flt.pattern, norm, case_insensitive=flt.field.kind in ("pn", "text")):
                return False
        return True

    # -- audit --------------------------------------------------------------
    def _query_event(self, principal: Principal, door: str, query: FindQuery, matches: int) -> ev.AuditEvent:
        """PS3.15 A.5.3.10 Query (110112); PHI values in the query become blind tokens."""
        return ev.AuditEvent(
            event_id=ev.EventId.QUERY,
            action=ev.Action.EXECUTE,
            outcome=ev.Outcome.SUCCESS,
            participants=actor(principal, source=True),
            objects=[ev.query_object(_QUERY_SOP_CLASS[query.model], self.redacted_query(query))],
            door=door,
            context={"matches": matches, "level": query.level},
        )

    def redacted_query(self, query: FindQuery) -> bytes:
        """The query as JSON with encrypted-attribute values replaced by their exact blind token."""
        filters: dict[str, str] = {}
        for keyword, value in sorted(query.filters.items()):
            field = PHI_BY_KEYWORD.get(keyword)
            if field is not None and value:
                filters[keyword] = "blind:" + self._keyring.blind.exact(field.token_field,
                                                                        field.normalise(value))
            else:
                filters[keyword] = value
        doc = {"level": query.level, "model": query.model, "filters": filters,
               "limit": query.limit, "offset": query.offset}
        return json.dumps(doc, sort_keys=True).encode()


_QUERY_SOP_CLASS = {
    "PATIENT": "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
    "STUDY": "1.2.840.10008.5.1.4.1.2.2.1",    # Study Root Q/R FIND
}

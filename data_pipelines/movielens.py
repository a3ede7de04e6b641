"""Import MovieLens in any of its common layouts into the unified tables.

=================  =========================================================  ====================
layout             files                                                      examples
=================  =========================================================  ====================
``recbole``        ``<name>.inter``, ``.item``, ``.user``, ``.kg``, ``.link``  RecBole ml-100k
                   (tab-separated, typed headers ``user_id:token``)
``grouplens-100k`` ``u.data`` (tab), ``u.item``, ``u.user`` (``|``, latin-1)   ml-100k.zip
``dat``            ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``)      ml-1m, ml-10m
``csv``            ``ratings.csv``, ``movies.csv`` (no users file)             ml-latest, ml-25m
=================  =========================================================  ====================

Every layout gives ``events`` (source ``"rating"``, value = the rating), ``items`` (title
with year, e.g. ``"Toy Story (1995)"``; categories = genres; an extra ``year`` column) and
``users`` (``user_id`` + ``age`` Int64, ``gender``, ``occupation``, ``zip_code`` where the
layout has them; in ml-1m ``age`` is the lower bound of the age group and occupation codes
are turned into names). A RecBole knowledge graph (``.kg`` + ``.link``) becomes
``item_relations(item_id, relation, entity)`` for the triples whose head is a movie.
Rows are dropped and counted by :func:`data_pipelines.generic.build_tables`.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from data_pipelines.generic import ImportResult, build_tables, decode_text, refuse_non_text
from data_pipelines.report import DataError, RowReport

__all__ = ["ImportResult", "import_movielens", "detect_layout"]

#: The 19 genre flag columns of GroupLens ``u.item``, in file order (``u.genre`` overrides).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: Genre values that mean "no genre".
NO_GENRE = ("unknown", "(no genres listed)")
#: ml-1m ``users.dat`` occupation codes (from its README).
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)  # fmt: skip
#: Ratings in every MovieLens release (half stars from ml-10m on); others are dropped and counted.
RATING_RANGE = (0.5, 5.0)
#: File that identifies each layout.
MARKERS = {"grouplens-100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}


def import_movielens(path: str | Path, *, strict: bool = False) -> ImportResult:
    """Read the MovieLens folder ``path`` (any layout above) into ``events``, ``items``, ``users``
    (+ ``item_relations``), counting dropped rows; ``strict`` raises DataError at the first one."""
    layout, folder = detect_layout(path)
    reader = {"recbole": _read_recbole, "grouplens-100k": _read_grouplens, "dat": _read_dat, "csv": _read_csv}[layout]
    result = reader(folder, strict)
    result.info = {"dataset": "movielens", "layout": layout, "path": str(folder)} | result.info
    return result


def detect_layout(path: str | Path) -> tuple[str, Path]:
    """``(layout, folder)`` of a MovieLens folder (or of its only MovieLens subfolder)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: MovieLens folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: expected the MovieLens folder, not a file")
    layout = _layout_of(path)
    if layout:
        return layout, path
    found = [(sub, _layout_of(sub)) for sub in sorted(path.iterdir()) if sub.is_dir()]
    found = [(sub, layout) for sub, layout in found if layout]
    if len(found) == 1:
        return found[0][1], found[0][0]
    looked = "*.inter, " + ", ".join(MARKERS.values())
    if found:
        names = ", ".join(sub.name for sub, _ in found)
        raise DataError(f"{path}: several MovieLens folders inside ({names}); pass one of them")
    raise DataError(f"{path}: no MovieLens files found (looked for {looked})")


def _layout_of(folder: Path) -> str | None:
    if list(folder.glob("*.inter")):
        return "recbole"
    for layout, marker in MARKERS.items():
        if (folder / marker).is_file():
            return layout
    return None


# --------------------------------------------------------------------------- reading helpers


def _read(
    path: Path, separator: str, *, header: bool, n_fields: int | None = None, quoted: bool = False
) -> pl.DataFrame:
    """A delimited text file as all-string columns; ``::`` separators and latin-1 text are handled."""
    refuse_non_text(path, "MovieLens")
    data = decode_text(path)
    if separator == "::":
        data, separator = data.replace(b"::", b"\x1f"), "\x1f"
    try:
        df = pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            has_header=header,
            infer_schema=False,
            quote_char='"' if quoted else None,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as exc:
        message = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read with separator {separator!r} ({message})") from None
    if n_fields is not None and df.height and df.width != n_fields:
        shown = "::" if separator == "\x1f" else separator
        raise DataError(f"{path}: expected {n_fields} fields separated by {shown!r}, found {df.width} in row 0")
    return df


def _need(df: pl.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} not found (columns: {', '.join(df.columns)})")


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _genres(expr: pl.Expr, sep: str) -> pl.Expr:
    """Split a genre string into a list, dropping the "no genre" placeholders."""
    return (
        expr.str.split(sep)
        .list.eval(pl.element().str.strip_chars().filter(~pl.element().str.strip_chars().is_in(("",) + NO_GENRE)))
        .fill_null([])
    )


def _with_year(items: pl.DataFrame) -> pl.DataFrame:
    """Add ``year`` (Int64) taken from a trailing ``(YYYY)`` of the title."""
    return items.with_columns(
        year=pl.col("title").str.extract(r"\((\d{4})\)\s*$").cast(pl.Int64, strict=False),
        title=pl.col("title").str.strip_chars(),
    )


def _profile(users: pl.DataFrame) -> pl.DataFrame:
    """Profile columns with their types: age Int64, the rest trimmed strings."""
    casts = [pl.col(c).str.strip_chars() for c in users.columns if c not in ("user_id", "age")]
    if "age" in users.columns:
        casts.append(pl.col("age").str.strip_chars().cast(pl.Int64, strict=False))
    return users.with_columns(casts)


def _events(ratings: pl.DataFrame) -> pl.DataFrame:
    return ratings.select("user_id", "item_id", "timestamp", "value").with_columns(source=pl.lit("rating"))


def _build(
    ratings: pl.DataFrame,
    ratings_file: Path,
    items: pl.DataFrame | None,
    items_file: Path | None,
    users: pl.DataFrame | None,
    users_file: Path | None,
    strict: bool,
    labels: dict[str, str],
) -> ImportResult:
    """Shared cleaning and row accounting (see :func:`data_pipelines.generic.build_tables`)."""
    result = build_tables(
        _events(ratings),
        events_file=str(ratings_file),
        items=items,
        items_file=str(items_file or ""),
        users=users,
        users_file=str(users_file or ""),
        labels=labels,
        value_range=RATING_RANGE,
        strict=strict,
    )
    files = {"events": ratings_file, "items": items_file, "users": users_file}
    result.info = {"files": {role: str(file) for role, file in files.items() if file}}
    return result


# --------------------------------------------------------------------------- layouts


def _read_atomic(path: Path, columns: list[str]) -> pl.DataFrame:
    """A RecBole atomic file; ``name:type`` headers lose their type."""
    df = _read(path, "\t", header=True)
    df = df.rename({c: c.split(":", 1)[0] for c in df.columns})
    _need(df, path, columns)
    return df


def _read_recbole(folder: Path, strict: bool) -> ImportResult:
    inters = sorted(folder.glob("*.inter"))
    named = [p for p in inters if p.stem == folder.name]
    if len(inters) > 1 and not named:
        raise DataError(f"{folder}: several .inter files ({', '.join(p.name for p in inters)}); keep one per folder")
    inter = named[0] if named else inters[0]
    stem = inter.with_suffix("")
    ratings = _read_atomic(inter, ["user_id", "item_id", "rating", "timestamp"]).rename({"rating": "value"})

    items = None
    items_file = _optional(stem.with_suffix(".item"))
    if items_file:
        raw = _read_atomic(items_file, ["item_id"])
        genre_col = next((c for c in ("class", "genre", "genres") if c in raw.columns), None)
        title = pl.col("movie_title").str.strip_chars() if "movie_title" in raw.columns else pl.col("item_id")
        year = (
            pl.col("release_year").str.strip_chars().cast(pl.Int64, strict=False)
            if "release_year" in raw.columns
            else pl.lit(None, dtype=pl.Int64)
        )
        items = raw.select(
            "item_id",
            title=pl.when(year.is_not_null()).then(pl.format("{} ({})", title, year)).otherwise(title),
            categories=_genres(pl.col(genre_col), " ") if genre_col else pl.lit([], dtype=pl.List(pl.Utf8)),
            year=year,
        )

    users = None
    users_file = _optional(stem.with_suffix(".user"))
    if users_file:
        users = _profile(_read_atomic(users_file, ["user_id"]))

    labels = {"value": "rating"}
    result = _build(ratings, inter, items, items_file, users, users_file, strict, labels)
    kg, link = _optional(stem.with_suffix(".kg")), _optional(stem.with_suffix(".link"))
    if kg and link:
        relations, report = _read_kg(kg, link, result.tables["items"])
        result.tables["item_relations"] = relations
        result.reports.append(report)
        result.info["files"] |= {"kg": str(kg), "link": str(link)}
    elif kg or link:
        have, lacks = (kg, ".link") if kg else (link, ".kg")
        result.notes.append(f"{have}: no matching {lacks} file, so no item_relations table")
    return result


def _read_kg(kg: Path, link: Path, items: pl.DataFrame) -> tuple[pl.DataFrame, RowReport]:
    """``item_relations`` from triples whose head entity is linked to a kept item.

    Triples about other entities are not errors, so this report never raises (even with --strict).
    """
    triples = _read_atomic(kg, ["head_id", "relation_id", "tail_id"])
    links = _read_atomic(link, ["item_id", "entity_id"]).unique(subset="entity_id", keep="first", maintain_order=True)
    report = RowReport("item_relations", read=triples.height, source=str(kg))
    shown = ["head_id", "relation_id", "tail_id"]
    triples = report.drop(triples, ~pl.col("head_id").is_in(links["entity_id"].implode()), "head is not a movie", shown)
    relations = triples.join(links, left_on="head_id", right_on="entity_id", how="left", maintain_order="left")
    relations = report.drop(
        relations, ~pl.col("item_id").is_in(items["item_id"].implode()), "movie not in the items table", shown
    )
    relations = report.drop(relations, pl.struct(shown).is_duplicated(), "duplicate triple", shown)
    relations = relations.select("item_id", relation=pl.col("relation_id"), entity=pl.col("tail_id"))
    return relations, report


def _read_grouplens(folder: Path, strict: bool) -> ImportResult:
    ratings_file = folder / "u.data"
    ratings = _read(ratings_file, "\t", header=False, n_fields=4)
    ratings.columns = ["user_id", "item_id", "value", "timestamp"]

    items = None
    items_file = _optional(folder / "u.item")
    if items_file:
        genres = GENRES_100K
        genre_file = _optional(folder / "u.genre")
        if genre_file:
            listed = _read(genre_file, "|", header=False)
            genres = tuple(name for name in listed[:, 0].drop_nulls().str.strip_chars().to_list() if name)
        raw = _read(items_file, "|", header=False, n_fields=5 + len(genres))
        flags = raw.columns[5:]
        items = _with_year(
            raw.select(
                item_id=pl.col(raw.columns[0]),
                title=pl.col(raw.columns[1]),
                categories=pl.concat_list(
                    pl.when(pl.col(flag).str.strip_chars() == "1").then(pl.lit(genre))
                    for flag, genre in zip(flags, genres)
                )
                .list.drop_nulls()
                .list.eval(pl.element().filter(~pl.element().is_in(NO_GENRE))),
            )
        )

    users = None
    users_file = _optional(folder / "u.user")
    if users_file:
        users = _read(users_file, "|", header=False, n_fields=5)
        users.columns = ["user_id", "age", "gender", "occupation", "zip_code"]
        users = _profile(users)
    labels = {"user_id": "field 1", "item_id": "field 2", "value": "field 3 (rating)", "timestamp": "field 4"}
    return _build(ratings, ratings_file, items, items_file, users, users_file, strict, labels)


def _read_dat(folder: Path, strict: bool) -> ImportResult:
    ratings_file = folder / "ratings.dat"
    ratings = _read(ratings_file, "::", header=False, n_fields=4)
    ratings.columns = ["user_id", "item_id", "value", "timestamp"]

    items = None
    items_file = _optional(folder / "movies.dat")
    if items_file:
        raw = _read(items_file, "::", header=False, n_fields=3)
        raw.columns = ["item_id", "title", "genres"]
        items = _with_year(raw.select("item_id", "title", categories=_genres(pl.col("genres"), "|")))

    users = None
    users_file = _optional(folder / "users.dat")
    if users_file:
        users = _read(users_file, "::", header=False, n_fields=5)
        users.columns = ["user_id", "gender", "age", "occupation", "zip_code"]
        code = pl.col("occupation").str.strip_chars().cast(pl.Int64, strict=False)
        names = pl.Series(OCCUPATIONS_1M)
        users = _profile(
            users.with_columns(
                occupation=pl.when(code.is_between(0, len(names) - 1))
                .then(code.replace_strict(list(range(len(names))), names.to_list(), default=None))
                .otherwise(pl.col("occupation"))
            )
        ).select("user_id", "age", "gender", "occupation", "zip_code")
    labels = {"value": "rating"}
    return _build(ratings, ratings_file, items, items_file, users, users_file, strict, labels)


def _read_csv(folder: Path, strict: bool) -> ImportResult:
    ratings_file = folder / "ratings.csv"
    refuse_non_text(ratings_file, "MovieLens")
    try:
        ratings = pl.read_csv(ratings_file, infer_schema=False, raise_if_empty=False)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{ratings_file}: cannot read ({str(exc).splitlines()[0]})") from None
    _need(ratings, ratings_file, ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename({"userId": "user_id", "movieId": "item_id", "rating": "value"})

    items = None
    items_file = _optional(folder / "movies.csv")
    if items_file:
        raw = _read(items_file, ",", header=True, quoted=True)
        _need(raw, items_file, ["movieId", "title", "genres"])
        items = _with_year(raw.select(item_id="movieId", title="title", categories=_genres(pl.col("genres"), "|")))
    labels = {"user_id": "userId", "item_id": "movieId", "value": "rating"}
    return _build(ratings, ratings_file, items, items_file, None, None, strict, labels)

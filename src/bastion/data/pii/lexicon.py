"""Words that mark names and addresses: Faker's person names of many Latin-script locales,
titles and company suffixes, and street-type words of the languages Bastion meets.

The name lists load on first use (about 40 locales, 20,000 first and 20,000 last names).
The street words are listed here rather than taken from Faker, whose address providers
mix in filler ("Burg", "Club") and names; this list is the street types themselves.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass

import faker.providers.person as providers
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faker.providers.address.en_US import Provider as UnitedStates  # USPS street suffixes

__all__ = [
    "STREET_LINE",
    "Names",
    "address_shaped",
    "is_person",
    "name_shaped",
    "names",
    "street_line",
    "words",
]


def words(text: str) -> tuple[str, ...]:
    """The words of ``text``: long word lists stay readable as one string."""
    return tuple(text.split())


#: Languages whose Faker person providers are read (Latin script).
_LANGUAGES = frozenset(
    words("cs da de en es et fi fr ga hr hu is it lt lv nl no pl pt ro sk sl sv tr")
)
#: Lower-case words that may sit between the parts of a name.
_PARTICLES = frozenset(
    words("van von de der den da das do dos di del della la le du des y e zu ter ten af av bin al")
)
_TITLES = frozenset(
    words(
        "mr mrs ms miss mx dr prof sir madam lady herr frau fr hr m mme mlle dott sig sr "
        "sra srta don doña pan pani ing mag dipl univ"
    )
)
_SUFFIXES = frozenset(words("jr sr ii iii iv v md phd dds dvm mba bsc msc ba ma esq"))
_COMPANY = frozenset(
    words(
        "gmbh ag kg ohg gbr mbh ug inc ltd llc llp plc co corp corporation company group "
        "sa sas sarl sàrl spa srl sl bv nv ab as asa oy oyj aps sp kft zrt sro s.r.o. "
        "a.s. & e.v. ev stiftung foundation verein association"
    )
)
#: Street types written as a word of their own (rue de la Paix, Calle Mayor, ul. Długa).
_STREET_WORDS = words(
    "street st road rd avenue ave av lane ln drive dr boulevard blvd bd court ct "
    "place pl square sq terrace close crescent way parkway highway hwy circle cir "
    "trail row mews grove gardens walk wharf quay parade esplanade alley plaza route "
    "flat apt apartment suite unit box psc apo fpo dpo rue chemin impasse allée quai "
    "cours voie sentier faubourg calle avenida avda paseo camino carretera ronda "
    "travesía pasaje callejón glorieta rambla urbanización cañada cuesta calzada "
    "privada prolongación carrera diagonal transversal andador cerrada circuito "
    "periférico retorno piso puerta via viale piazza piazzale corso largo vicolo "
    "strada contrada borgo lungomare località frazione rotonda traversa salita piano "
    "rua travessa praça alameda estrada rodovia beco ladeira viela quadra condomínio "
    "conjunto jardim parque loteamento setor residencial chácara sítio fazenda núcleo "
    "recanto vereda trecho passarela lote bloco apto andar ul ulica al aleja plac os "
    "osiedle rondo skwer bulwar ulice náměstí nám třída nábřeží trieda námestie "
    "bulevardul aleea calea șoseaua soseaua intrarea drumul piața splaiul cesta trg "
    "put utca út tér körút köz sokak cadde caddesi mahallesi mah"
)
_NEAR, _LONGEST = 4, 20
#: Street types that end a compound word (Hauptstraße, Kerkstraat, Parkgatan, Müllerring).
_STREET_ENDINGS = words(
    "straße strasse str weg platz gasse allee ring damm ufer chaussee steig pfad "
    "markt straat laan plein gracht kade singel dijk steeg dreef baan gade vej stræde "
    "gatan vägen gata gränd torget stigen veien gate katu tie kuja polku utca "
    "boulevard bulevardi hof pad lei"
)
#: Street types addresses write in lower case too (12 rue de la Paix); the others count
#: capitalised only, since prose has them as words ("seen in unit 4, way better").
_LOWER_CASE = words(
    "rue avenue boulevard chemin impasse allée quai ul ulica aleja plac osiedle via "
    "viale calle rua nám náměstí ulice cesta utca"
)
#: The European street line without a street type (Vraňanská 43, 218 58 Mirošov): a name,
#: a house number, a comma, a postcode and a capitalised place.
STREET_LINE = (
    r"^\p{Lu}[\p{L}.'\x{2019} -]*\s\d{1,5}[a-z]?(?:/\d{1,4}[a-z]?)?,\s"
    r"(?:[A-Z]{1,2}-)?\d{3,5}(?:\s?\d{2})?(?:\s?[A-Z]{2})?,?\s\p{Lu}"
)


def street_line(values: pa.Array) -> np.ndarray:
    """Which values :data:`STREET_LINE` matches (the regex runs only on values with the
    comma it needs)."""
    found = np.zeros(len(values), bool)
    rows = np.flatnonzero(pc.match_substring(values, ",").to_numpy(zero_copy_only=False))
    if len(rows):
        line = pc.match_substring_regex(values.take(pa.array(rows)), STREET_LINE)
        found[rows] = line.to_numpy(zero_copy_only=False)
    return found


@functools.cache
def _lower_case() -> pa.Array:
    """As an Arrow array, made on first use: Arrow allocates nothing at import time."""
    return pa.array(sorted(_LOWER_CASE), type=pa.string())


@functools.cache
def _street_words() -> pa.Array:
    every = {*_STREET_WORDS, *(w.lower() for w in UnitedStates.street_suffixes)}
    return pa.array(sorted(every), type=pa.string())


def address_shaped(values: pa.Array) -> np.ndarray:
    """Which values read as a street address: at most 20 words, one of them a street type
    (a word of its own, capitalised unless addresses write it in lower case, or the end of
    a compound word) with a number at most four words away. Split into words and looked
    up, vectorised: no regex of a thousand words."""
    words = pc.utf8_split_whitespace(values)
    cased = pc.utf8_trim(pc.list_flatten(words), characters=",.;:()/#'\"")
    flat = pc.utf8_lower(cased)
    endings = "|".join(re.escape(w) for w in _STREET_ENDINGS)
    capital = pc.utf8_is_upper(pc.utf8_slice_codeunits(cased, 0, 1))
    typed = pc.or_(
        pc.is_in(flat, value_set=_lower_case()),  # rue de la Paix, ul. Długa
        pc.and_(pc.is_in(flat, value_set=_street_words()), capital),  # not "in unit 4"
    )
    street = pc.or_(typed, pc.match_substring_regex(flat, f".(?:{endings})$")).to_numpy(
        zero_copy_only=False
    )
    number = np.asarray(pc.match_substring_regex(flat, r"\d").to_numpy(zero_copy_only=False))
    offsets = np.asarray(words.offsets.to_numpy())
    offsets = offsets - offsets[0]  # a slice's offsets start where its words do
    rows = np.repeat(np.arange(len(values)), np.diff(offsets))
    # Numbers within four words of each word, counted in its own row only.
    seen = np.concatenate([[0], np.cumsum(number)])
    position = np.arange(len(flat))
    low = np.maximum(position - _NEAR, offsets[rows])
    high = np.minimum(position + _NEAR + 1, offsets[rows + 1])
    near = seen[high] - seen[low] > 0
    found = np.bincount(rows[street & near], minlength=len(values)) > 0
    shaped: np.ndarray = found & (np.diff(offsets) <= _LONGEST)
    return shaped


def name_shaped(values: pa.Array) -> np.ndarray:
    """The cheap prefilter of names: a capital first, a space or comma, no digits or
    symbols, at most 80 characters (:func:`is_person` reads the words)."""
    first = pc.utf8_is_upper(pc.utf8_slice_codeunits(values, 0, 1))
    spaced = pc.match_substring_regex(values, r"[ ,]")
    plain = pc.invert(pc.match_substring_regex(values, r"[0-9@/\\_:;#*+=<>|]"))
    short = pc.less_equal(pc.utf8_length(values), 80)
    shaped = pc.and_(pc.and_(first, spaced), pc.and_(plain, short))
    result: np.ndarray = np.asarray(shaped.to_numpy(zero_copy_only=False))
    return result


@dataclass(frozen=True)
class Names:
    first: frozenset[str]
    last: frozenset[str]

    def known(self, word: str) -> bool:
        return word in self.first or word in self.last


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, tuple | list | dict) else []


@functools.cache
def names() -> Names:
    """First and last names (lower case) of Faker's Latin-script person providers."""
    first: set[str] = set()
    last: set[str] = set()
    for module in pkgutil.iter_modules(providers.__path__):
        if module.name.split("_")[0] not in _LANGUAGES:
            continue
        provider = importlib.import_module(f"{providers.__name__}.{module.name}").Provider
        for attribute in ("first_names", "first_names_female", "first_names_male"):
            first.update(_name_parts(_strings(getattr(provider, attribute, None))))
        for attribute in (
            "last_names",
            "last_names_female",
            "last_names_male",
            "female_last_names",
            "male_last_names",
            "unisex_last_names",
        ):
            last.update(_name_parts(_strings(getattr(provider, attribute, None))))
    return Names(first=frozenset(first), last=frozenset(last))


def _name_parts(values: Iterable[str]) -> Iterable[str]:
    for value in values:
        yield from re.split(r"[\s-]+", value.lower())


def _bare(token: str) -> str:
    return token.lower().strip(".")


def is_person(value: str, lexicon: Names) -> tuple[bool, bool]:
    """(shaped, named): two to five name words, titles and suffixes aside, each capitalised
    or a particle, no company word; ``named`` when one of them is a known name too."""
    tokens = [t for t in re.split(r"[\s,]+", value.strip()) if t]
    while tokens and _bare(tokens[0]) in _TITLES:
        tokens = tokens[1:]
    while tokens and _bare(tokens[-1]) in _SUFFIXES:
        tokens = tokens[:-1]
    if not 2 <= len(tokens) <= 5:
        return False, False
    known = False
    for token in tokens:
        lower = token.lower()
        if lower in _COMPANY:
            return False, False
        if lower in _PARTICLES:
            continue
        if not token[0].isupper() or any(ch.isdigit() for ch in token):
            return False, False
        known = known or any(
            lexicon.known(part) for part in re.split(r"[-'\u2019.]", lower) if part
        )
    return True, known

"""Postal addresses: US, UK, DE, NL, FR and IT shapes, each behind a cheap gate.

Detectors yield ``(start, end)`` spans of the original text; :mod:`.redact`
resolves overlaps and places the placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.lib.privacy.chars import _ANY_DIGIT, _LO, _UP, _lower

_CAPWORD_STRICT = rf"[{_UP}][{_LO}'’]+(?:-[{_UP}{_LO}][{_LO}'’]+)*"
# Line separators inside an address: a comma or a newline (with spaces).
_LSEP = r"(?:[ \t]*,[ \t]*\n?[ \t]*|[ \t]*\n[ \t]*)"
# City words may be CamelCase ("VaillantBourg") or hyphenated ("Saint-Denis").
_CITYWORD = rf"[{_UP}][{_LO}'’]+(?:[{_UP}][{_LO}]+)?(?:-[{_UP}{_LO}][{_LO}'’]+)*"
# Lower-case links inside city names: "Frankfurt am Main", "Krimpen aan de Lek", "Neunburg vorm Wald".
_CITY = (rf"(?:'[st][ -])?{_CITYWORD}(?:[ -](?:[{_LO}]{{1,5}}[ -]){{0,2}}{_CITYWORD}){{0,3}}")
_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|"
    "NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|AS|GU|MP|PR|VI|UM|FM|MH|PW|AA|AE|AP"
)
_UK_POSTCODE = r"(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?[0-9][0-9A-HJKPSTUW]?[ ]?[0-9][ABD-HJLNP-UW-Z]{2})"
# After a street line a looser shape is safe enough (and real typos happen).
_UK_POSTCODE_LOOSE = r"(?:[A-Z]{1,2}[0-9][A-Z0-9]?[ ]?[0-9][A-Z]{2})"
# How addresses end: "City, ST 12345", "[City,] SW1A 1AA", "12345 City", "1234 AB City", "00100, City (RM)".
_TAIL = (
    rf"(?:{_LSEP}{_CITY},?[ ](?:{_US_STATES})[ ][0-9]{{5}}(?:-[0-9]{{4}})?"
    rf"|(?:{_LSEP}{_CITY}){{0,2}}(?:{_LSEP}|[ ]){_UK_POSTCODE_LOOSE}"
    rf"|{_LSEP}(?:[A-Z]-)?[0-9]{{5}},?[ ]{_CITY}(?:[ ]\([A-Z]{{2}}\))?"
    rf"|{_LSEP}[1-9][0-9]{{3}}[ ]?[A-Z]{{2}}(?:(?:{_LSEP}|[ ]){_CITY})?)"
    rf"(?:{_LSEP}(?:USA|U\.S\.A\.|United States|UK|United Kingdom|England|Scotland|Wales|Germany|Deutschland"
    rf"|France|Netherlands|The Netherlands|Nederland|Italy|Italia))?(?![\w])"
)
# USPS Publication 28 street suffixes (and UK ones): the word that makes
# "85 Jennifer Shore" a street and "85 Jennifer photos" not.
_EN_SUFFIX = (
    "Alley|Aly|Avenue|Ave|Bend|Bluff|Bluffs|Boulevard|Blvd|Branch|Bridge|Brook|Brooks|Burg|Burgs|Bypass|"
    "Camp|Canyon|Cape|Causeway|Center|Centers|Circle|Cir|Circles|Cliff|Cliffs|Close|Club|Common|Commons|Corner|"
    "Corners|Course|Court|Ct|Courts|Cove|Coves|Creek|Crescent|Cres|Crest|Crossing|Crossroad|Curve|Dale|Dam|"
    "Divide|Drive|Dr|Drives|Drove|Estate|Estates|Expressway|Expy|Extension|Extensions|Fall|Falls|Ferry|"
    "Field|Fields|Flat|Flats|Ford|Fords|Forest|Forge|Forges|Fork|Forks|Fort|Freeway|Fwy|Garden|Gardens|"
    "Gateway|Glen|Glens|Green|Greens|Grove|Groves|Harbor|Harbors|Harbour|Haven|Heights|Highway|Hwy|Hill|"
    "Hills|Hollow|Inlet|Island|Islands|Isle|Junction|Junctions|Key|Keys|Knoll|Knolls|Lake|Lakes|Land|"
    "Landing|Lane|Ln|Light|Lights|Loaf|Lock|Locks|Lodge|Loop|Mall|Manor|Manors|Meadow|Meadows|Mews|Mill|"
    "Mills|Mission|Motorway|Mount|Mountain|Mountains|Neck|Orchard|Oval|Overpass|Parade|Park|Parks|Parkway|"
    "Pkwy|Parkways|Pass|Passage|Path|Pike|Pine|Pines|Place|Pl|Plain|Plains|Plaza|Point|Points|Port|Ports|"
    "Prairie|Promenade|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|Rise|River|Road|Rd|Roads|Route|Row|"
    "Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|Spur|Spurs|Square|Sq|Squares|Station|"
    "Stravenue|Stream|Street|St|Streets|Summit|Terrace|Ter|Throughway|Trace|Track|Trafficway|Trail|Trl|"
    "Tunnel|Turnpike|Underpass|Union|Unions|Valley|Valleys|Via|Viaduct|View|Views|Village|Villages|Ville|"
    "Vista|Walk|Walks|Wall|Way|Ways|Well|Wells|Wharf|Wynd|Yard"
)
_UNIT = r"(?:,?[ ](?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Fl\.?|Room|Rm\.?|Bldg\.?|Building|#)[ ]?#?[0-9][\w-]{0,5})"
_UK_PREFIX = r"(?:(?:Flat|Studio|Apartment|Apt\.?|Unit|Suite|Room)[ ][0-9][\w-]{0,4}" + _LSEP + ")"
_NUMBER = r"[0-9]{1,6}[A-Za-z]?"
_EN_STREET = rf"(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ ])?(?:{_CAPWORD_STRICT}[ ]){{1,3}}(?:{_EN_SUFFIX})\b\.?(?:[ ](?:N|S|E|W|NE|NW|SE|SW)\b\.?)?"
# German/Dutch streets are one word ending in a street noun, house number after.
_DE_NL_SUFFIX = (
    "straße|strasse|str\\.|gasse|platz|weg|allee|ring|damm|ufer|chaussee|steig|stieg|pfad|markt|"
    "graben|wall|zeile|kamp|berg|hof|park|dreef|steeg|pad|laan|straat|plein|kade|gracht|singel|dijk|"
    "boulevard|erf|plantsoen|baan|hoven|veld|weide|dam|haven|wetering|lei|brink|hage|promenade"
)
_DE_NL_STREET = (
    rf"(?:(?:van|von)[ ](?:de[nr]?[ ]|het[ ])?|'t[ ])?"  # streets named after people: "van der Dussengasse"
    rf"(?:[{_UP}][{_LO}]*(?:er|e|en|es)[ ]){{0,2}}(?:[{_UP}](?:[{_LO}]{{1,20}}|\.)-){{0,4}}[{_UP}][{_LO}{_UP}\-]{{0,40}}(?i:{_DE_NL_SUFFIX})[ ]"
    rf"[0-9]{{1,5}}[a-zA-Z]?(?:[ ]?[/-][ ]?[0-9]{{1,5}}[a-zA-Z]?)?"
)
_FR_TYPES = (
    "rue|avenue|av\\.|boulevard|bd|chemin|impasse|place|allée|quai|route|cours|passage|square|voie|"
    "rond-point|faubourg|sentier|villa|résidence|hameau|lieu-dit|parvis|esplanade|promenade"
)
_FR_LINK = r"(?:(?:de[ ]la|de[ ]l'|de|du|des|d'|l'|la|le|les)[ ]?)?"
_FR_STREET = rf"(?i:{_FR_TYPES})[ ]{_FR_LINK}{_CAPWORD_STRICT}(?:[ ]{_FR_LINK}{_CAPWORD_STRICT}){{0,3}}"
_FR_NUMBER = r"[0-9]{1,5}(?:[ ]?(?:bis|ter|[A-D]))?,?[ ]"
_IT_TYPES = (
    "Via|Viale|V\\.le|Vicolo|Piazza|P\\.za|Piazzale|Corso|C\\.so|Largo|Stretto|Contrada|Borgo|Rotonda|"
    "Strada|Canale|Incrocio|Calle|Lungomare|Lungotevere|Salita|Traversa|Vico|Rampa|Galleria|Località"
)
_IT_LINK = r"(?:(?:dei|degli|delle|della|dello|del|di|da|de|d')[ ]?)?"
_IT_STREET = (
    rf"(?:{_IT_TYPES})[ ]{_IT_LINK}{_CAPWORD_STRICT}(?:[ ]{_IT_LINK}{_CAPWORD_STRICT}){{0,3}},?[ ]"
    rf"[0-9]{{1,5}}[a-zA-Z]?(?:/[A-Za-z0-9]{{1,3}})?(?:,?[ ](?:Appartamento|Piano|Interno|Int\.|Scala)[ ][0-9]{{1,4}})?"
)
# Each shape comes with a cheap gate (a literal-led regex that must match
# somewhere first), so a turn without street words costs a few microseconds.
_GATE_EN = re.compile(rf"\b(?:{_EN_SUFFIX})\b")
_GATE_DE_NL = re.compile(rf"(?:{_DE_NL_SUFFIX})[ ][0-9]")  # on the lower-cased text
_GATE_FR = re.compile(rf"\b(?:{_FR_TYPES})[ ]")  # on the lower-cased text
_GATE_IT = re.compile(rf"\b(?:{_IT_TYPES})[ ]")
_GATE_MIL = re.compile(r"\b[AFD]PO[ ]A[AEP][ ][0-9]")
_GATE_BOX = re.compile(r"(?i:box)[ ][0-9]")
_GATE_STATE_ZIP = re.compile(rf",[ ](?:{_US_STATES})[ ][0-9]{{5}}")
_GATE_UK_PC = re.compile(r"[0-9][A-Z]{2}(?![\w-])")
_ADDRESS_PATTERNS: list[tuple[re.Pattern[str], bool, re.Pattern[str]]] = [
    # 85 Jennifer Shore Apt. 4[, Port Benhaven, IG70 0NZ]   (US/UK, number first)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_UK_PREFIX}?{_NUMBER},?[ ]{_EN_STREET}{_UNIT}?(?:{_TAIL})?")),
    # Flat 5, Buckley Skyway, West Glen, W8G 7JR   (UK flat line, street without number)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_UK_PREFIX}{_EN_STREET}(?:{_TAIL})?")),
    # Buckley Skyway, West Glen, W8G 7JR   (street without number: only with a postal tail)
    (_GATE_EN, False, re.compile(rf"(?<![\w.,-]){_EN_STREET}{_UNIT}?{_TAIL}")),
    # Blümelstraße 49/98, 75650 Miltenberg / Haileydreef 83, 4388 ZG Nieuwkoop
    (_GATE_DE_NL, True, re.compile(rf"(?<![\w.-]){_DE_NL_STREET}(?:{_TAIL})?")),
    # 5, boulevard de Allain, 74503 Roy   (number or postal tail required)
    (_GATE_FR, True, re.compile(rf"(?<![\w.,-]){_FR_NUMBER}{_FR_STREET}(?:{_TAIL})?")),
    (_GATE_FR, True, re.compile(rf"(?<![\w.,-]){_FR_STREET}{_TAIL}")),
    # Via Nitti, 94 Appartamento 8, 92019, Sciacca (AG)
    (_GATE_IT, False, re.compile(
        rf"(?<![\w.-]){_IT_STREET}(?:{_TAIL}|{_LSEP}[0-9]{{5}},[ ]{_CITY}(?:[ ]\([A-Z]{{2}}\))?)?")),
    # US military mail: PSC 4115, Box 7815 / Unit 0521 Box 6218 / USNS Murphy, then APO/FPO/DPO AA 12345
    (_GATE_MIL, False, re.compile(
        rf"(?<![\w.-])(?:PSC[ ][0-9]{{4}},[ ]Box[ ][0-9]{{4}}|Unit[ ][0-9]{{4}}[ ]Box[ ][0-9]{{4}}"
        rf"|(?:USNS|USNV|USS|USCGC)[ ]{_CAPWORD_STRICT}){_LSEP}?[ ]?(?:APO|FPO|DPO)[ ]A[AEP][ ][0-9]{{5}}(?![\w])"
    )),
    # P.O. Box 123[, City, ST 12345]
    (_GATE_BOX, False, re.compile(rf"(?<![\w.-])P\.?[ ]?O\.?[ ]Box[ ][0-9]{{1,6}}(?:{_TAIL})?")),
    # Standalone "Springfield, IL 62704" (state validated) and UK postcodes (very specific shape).
    (_GATE_STATE_ZIP, False,
     re.compile(rf"(?<![\w.-]){_CITY},[ ](?:{_US_STATES})[ ][0-9]{{5}}(?:-[0-9]{{4}})?(?![\w-])")),
    (_GATE_UK_PC, False, re.compile(rf"(?<![\w-]){_UK_POSTCODE}(?![\w-])")),
]


# "Chapter 5 Main Points", "Top 10 Beach Resorts": the number counts something.
_COUNTING_NOUN_BEFORE = re.compile(
    r"(?i)\b(?:chapter|section|page|pages|figure|fig\.|table|top|step|part|level|season|episode|vol\.?|volume"
    r"|item|number|no\.|grade|class|day|week|year|gate|room|row|seat|platform|track|exit|route|bus|line)[ ]$"
)


def detect_address(text: str) -> Iterator[tuple[int, int]]:
    """Postal addresses: a street line, optionally followed by its postal/city line."""
    if not _ANY_DIGIT.search(text):
        return  # every shape below holds a house number, a postcode or a box number
    low = _lower(text)
    gates: dict[int, bool] = {}
    for gate, on_lower, pattern in _ADDRESS_PATTERNS:
        if id(gate) not in gates:
            gates[id(gate)] = gate.search(low if on_lower else text) is not None
        if not gates[id(gate)]:
            continue
        for m in pattern.finditer(text):
            start, end = m.span()
            if text[start].isdigit() and _COUNTING_NOUN_BEFORE.search(text, max(0, start - 12), start):
                continue
            while end > start and text[end - 1] in " \t\n,":
                end -= 1
            yield start, end



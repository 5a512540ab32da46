"""The bundled model's data: numbers 0-999,999 in words, the ways people write them, and sentences.

Used by train_default_model.py (training and evaluation) and, through it, by
export_default_model.py. No torch here: plain Python and num2words.

- `words(n, lang)`: the canonical text of a number (num2words 0.5.14; English without its commas;
  two num2words mistakes above 20,000 corrected, see `words`). Targets are always canonical.
- `form_text(n, lang, form, rng)`: the same number written as people write it (`FORMS[lang]`):
  capitals, commas, missing or extra "and", hyphens dropped or spaced, a full stop, extra spaces...
  Inputs of every task are drawn from these.
- Held-out numbers: the 1,000 of 0-9999 the first model held out (same seed, same draw) and 2,000
  of 10,000-999,999; no task ever trains on them (`is_heldout`).
- `entity_example(...)`: the extraction task, `entities: <sentence>` -> `NUMBER: span; NUMBER: span`,
  sentences from frames in English, German, French and Spanish; some frames are held out.
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
import zlib

SEED = 20261129
N_SMALL = 10000  # the first model's range; its held-out draw is kept
N_NUMBERS = 1_000_000
N_HELDOUT = 1000  # of 0-9999
N_HELDOUT_LARGE = 2000  # of 10,000-999,999
LANGS = {"en": "English", "de": "German", "fr": "French", "es": "Spanish"}
# The number tasks' prompts, `{}` where the number goes (the service's examples and tests use them).
PROMPTS = {
    "en-de": "translate English to German: {}",
    "de-en": "translate German to English: {}",
    "en-fr": "translate English to French: {}",
    "en-es": "translate English to Spanish: {}",
    "language": "language: {}",
    "digits": "digits: {}",
}


# ---------------------------------------------------------------------------------------------
# Canonical words


@functools.lru_cache(maxsize=200_000)
def raw_words(n: int, lang: str) -> str:
    """num2words' text (English with its commas), with two of its mistakes above 20,000 fixed:
    German 101,000 is "einhunderteinstausend" there (-> "einhunderteintausend"), Spanish 31,000
    "treinta y uno mil" (-> "treinta y un mil", and "ciento un mil"). Spanish 21,000 stays
    "veintiuno mil": "veintiún" has a "ú", which T5's vocabulary lacks (<unk>), so the model could
    not write it. Nothing below 10,000 changes."""
    from num2words import num2words

    text = num2words(n, lang=lang)
    if lang == "de":
        text = text.replace("einstausend", "eintausend")
    elif lang == "es":
        text = re.sub(r"\buno mil\b", "un mil", text)
    return text


def words(n: int, lang: str) -> str:
    text = raw_words(n, lang)
    return text.replace(",", "") if lang == "en" else text


# ---------------------------------------------------------------------------------------------
# Held-out numbers


@functools.lru_cache(maxsize=1)
def heldout_split() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(held-out of 0-9999, held-out of 10,000-999,999), each sorted."""
    rng = random.Random(SEED)
    small = list(range(N_SMALL))
    rng.shuffle(small)  # the first model's draw, unchanged
    large = random.Random(SEED + 2).sample(range(N_SMALL, N_NUMBERS), N_HELDOUT_LARGE)
    return tuple(sorted(small[:N_HELDOUT])), tuple(sorted(large))


@functools.lru_cache(maxsize=1)
def heldout_set() -> frozenset[int]:
    small, large = heldout_split()
    return frozenset(small) | frozenset(large)


def is_heldout(n: int) -> bool:
    return n in heldout_set()


def sample_number(rng: random.Random, kind: str = "task", heldout: bool = False) -> int:
    """A number for a training example (never a held-out one), or with `heldout` a held-out one.

    Training draws by size, not uniformly over 0-999,999 (where 99% have six digits): a third of
    0-9999 by digit count, the rest n = a * 1000 + b with a of 10-999 and b often 0 or under 100
    ("twelve thousand", "forty thousand and six"). `kind="entity"` favours small numbers, as text does.
    """
    if heldout:
        small, large = heldout_split()
        pool = small if rng.random() < (0.6 if kind == "entity" else 0.35) else large
        return rng.choice(pool)
    while True:
        r = rng.random()
        if kind == "entity":
            small_p, digits = 0.8, ((1, 0.25), (2, 0.35), (3, 0.2), (4, 0.2))
        else:
            small_p, digits = 0.35, ((1, 0.06), (2, 0.16), (3, 0.3), (4, 0.48))
        if r < small_p:
            d = rng.choices([d for d, _ in digits], [w for _, w in digits])[0]
            n = rng.randrange(0 if d == 1 else 10 ** (d - 1), 10**d)
        else:
            a = rng.randrange(10, 100) if rng.random() < 0.35 else rng.randrange(100, 1000)
            u = rng.random()
            b = 0 if u < 0.12 else rng.randrange(1, 100) if u < 0.3 else rng.randrange(100, 1000)
            n = a * 1000 + b
        if not is_heldout(n):
            return n


# ---------------------------------------------------------------------------------------------
# Forms: how people write a number. Each form is one change to the canonical text; "mixed" is
# several at once. Forms that do not change a number's text (no "and" to drop) leave it as it is.

CONNECTOR = {"en": "and", "de": "und", "fr": "et", "es": "y"}

FORMS = {
    "en": ["canonical", "first_cap", "title", "upper", "commas", "no_and", "extra_and", "hyphen_space",
           "hyphen_none", "full_stop", "extra_spaces", "mixed"],
    "de": ["canonical", "first_cap", "upper", "spaced", "no_ein", "full_stop", "extra_spaces", "mixed"],
    "fr": ["canonical", "first_cap", "title", "upper", "hyphen_space", "hyphens_all", "no_et", "full_stop",
           "extra_spaces", "mixed"],
    "es": ["canonical", "first_cap", "title", "upper", "no_y", "no_accents", "full_stop", "extra_spaces", "mixed"],
}
CASE_FORMS = ("first_cap", "title", "upper")
STRUCT_FORMS = {
    "en": ("commas", "no_and", "extra_and", "hyphen_space", "hyphen_none"),
    "de": ("spaced", "no_ein"),
    "fr": ("hyphen_space", "hyphens_all", "no_et"),
    "es": ("no_y", "no_accents"),
}
# Forms a span inside a sentence can take (a full stop or extra spaces belong to the sentence, and
# the tokenizer collapses spaces, so a span with two spaces could not be written back).
SPAN_FORMS = {lang: [f for f in forms if f not in ("full_stop", "extra_spaces", "mixed")] for lang, forms in FORMS.items()}


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


def _title(text: str, lang: str, rng: random.Random) -> str:
    keep_small = rng.random() < 0.5  # "Four Hundred and Five" or "Four Hundred And Five"
    out = []
    for word in text.split(" "):
        if word == CONNECTOR[lang] and keep_small:
            out.append(word)
        else:
            out.append("-".join(_cap(p) for p in word.split("-")))
    return " ".join(out)


def _struct(text: str, n: int, lang: str, form: str, rng: random.Random) -> str:
    if lang == "en":
        if form == "commas":
            return raw_words(n, "en")
        if form == "no_and":
            return text.replace(" and ", " ")
        if form == "extra_and":  # "three thousand and four hundred"
            return re.sub(r"thousand (\w+ hundred)", r"thousand and \1", text)
        if form == "hyphen_space":
            return text.replace("-", " ")
        if form == "hyphen_none":
            return text.replace("-", "")
    elif lang == "de":
        if form == "spaced":  # "zweitausend dreihundert"
            return re.sub(r"tausend(?=.)", "tausend ", text)
        if form == "no_ein":  # "hundertzwanzig", "tausendeins", "zweitausendhundert"
            return re.sub(r"(^|tausend|\s)ein(?=hundert|tausend)", r"\1", text)
    elif lang == "fr":
        if form == "hyphen_space":
            return text.replace("-", " ")
        if form == "hyphens_all":  # the 1990 spelling: "deux-mille-trois-cent-vingt-et-un"
            return text.replace(" ", "-")
        if form == "no_et":  # "vingt-un", "soixante-onze"
            return re.sub(r" et (un|onze)\b", r"-\1", text)
    elif lang == "es":
        if form == "no_y":
            return text.replace(" y ", " ")
        if form == "no_accents":
            return strip_accents(text)
    raise ValueError(f"no form {form} for {lang}")


def _extra_spaces(text: str, rng: random.Random) -> str:
    parts = text.split(" ")
    out = parts[0]
    for p in parts[1:]:
        out += " " * rng.choice((1, 2, 2, 3)) + p
    return " " * rng.choice((0, 0, 1)) + out + " " * rng.choice((0, 1, 2))


def apply_forms(n: int, lang: str, forms: list[str], rng: random.Random) -> str:
    """The number `n` in `lang` with the given forms applied (structure, then case, then punctuation)."""
    text = words(n, lang)
    for f in forms:
        if f in STRUCT_FORMS[lang]:
            text = _struct(text, n, lang, f, rng)
    if "upper" in forms:
        text = text.upper()
    elif "title" in forms:
        text = _title(text, lang, rng)
    elif "first_cap" in forms:
        text = _cap(text)
    if "full_stop" in forms:
        text += "."
    if "extra_spaces" in forms:
        text = _extra_spaces(text, rng)
    return text


def mixed_forms(lang: str, rng: random.Random, span: bool = False) -> list[str]:
    """Several forms at once: some structural ones, maybe a case, maybe punctuation."""
    struct = list(STRUCT_FORMS[lang])
    if lang == "en":  # at most one of each conflicting pair
        struct = [rng.choice(["commas", "extra_and"]), rng.choice(["hyphen_space", "hyphen_none"]), "no_and"]
    if lang == "fr":
        struct = [rng.choice(["hyphen_space", "hyphens_all"]), "no_et"]
    forms = [f for f in struct if rng.random() < 0.5]
    if lang == "en" and "extra_and" in forms and "no_and" in forms:
        forms.remove(rng.choice(["extra_and", "no_and"]))
    case = rng.choices([None, "first_cap", "title", "upper"], [0.3, 0.3, 0.2, 0.2])[0]
    if case and (lang != "de" or case != "title"):
        forms.append(case)
    if not span:
        if rng.random() < 0.4:
            forms.append("full_stop")
        if rng.random() < 0.3:
            forms.append("extra_spaces")
    return forms


def form_text(n: int, lang: str, form: str, rng: random.Random) -> str:
    """`n` in `lang` written in one form of FORMS[lang] ("mixed": a random mix)."""
    if form == "canonical":
        return words(n, lang)
    if form == "mixed":
        return apply_forms(n, lang, mixed_forms(lang, rng), rng)
    return apply_forms(n, lang, [form], rng)


def sample_form(lang: str, rng: random.Random) -> str:
    """The form of a training input: a quarter canonical, the rest spread over the others."""
    forms = FORMS[lang]
    if rng.random() < 0.25:
        return "canonical"
    if rng.random() < 0.4:
        return "mixed"
    return rng.choice([f for f in forms if f not in ("canonical", "mixed")])


def stable_rng(*key) -> random.Random:
    """A generator seeded by the key, the same in every process (evaluation examples)."""
    return random.Random(zlib.crc32("|".join(map(str, key)).encode()))


def language_key(text: str) -> str:
    """What identifies a written number whatever its form: its letters, lower case, no accents."""
    return re.sub(r"[^a-z]", "", strip_accents(text.lower()))


@functools.lru_cache(maxsize=1)
def ambiguous_language_keys() -> frozenset[str]:
    """Numbers written with the same letters in two languages (English and French "six")."""
    seen: dict[str, set[str]] = {}
    for n in range(N_SMALL):
        for lang in LANGS:
            seen.setdefault(language_key(words(n, lang)), set()).add(lang)
    return frozenset(k for k, langs in seen.items() if len(langs) > 1)


def ambiguous_language(text: str) -> bool:
    return language_key(text) in ambiguous_language_keys()


# ---------------------------------------------------------------------------------------------
# Entity extraction: sentences with number words. {N} is a number, {L} a list of 2-4 numbers
# ("twenty-one, forty-two and seven"). A number that starts a sentence gets a capital.

ENTITY_TYPE = "NUMBER"
ENTITY_PROMPT = "entities: "

FRAMES = {
    "en": {
        "train": [
            "I bought {N} apples and {N} pears.",
            "She is {N} years old.",
            "The train leaves in {N} minutes.",
            "{N} people came to the party.",
            "We walked {N} kilometres yesterday.",
            "The house cost {N} pounds.",
            "He scored {N} points in the last game.",
            "There are {N} students in the class and {N} teachers.",
            "The winning numbers were {L}.",
            "Please add {N} to {N}.",
            "My grandmother turned {N} last week.",
            "The book has {N} pages.",
            "About {N} cars pass here every day.",
            "They sold {N} tickets in {N} hours.",
            "Room {N} is on the left.",
            "We need {N} chairs, {N} tables and {N} plates.",
            "The answer is {N}.",
            "Count from {N} to {N}.",
            "{N} of the {N} runners finished the race.",
            "He paid {N} dollars for {N} books.",
            "The bridge is {N} metres long.",
            "I have told you {N} times!",
            "Between {N} and {N} guests are expected.",
            "The scores were {L}.",
            "Chapter {N} starts on page {N}.",
            "Our flight was delayed by {N} minutes.",
            "The {N}-year-old won the prize.",
            "Only {N} seats are left, so hurry.",
            "The recipe needs {N} eggs and {N} spoons of sugar.",
            "Add {L} together.",
            "My phone battery lasted {N} hours.",
            "The company hired {N} new workers this year.",
            "He often runs {N} laps before breakfast.",
            "Is it {N} or {N}?",
            "{N}",
            "Write {N}",
            "I often think about that summer.",
            "Someone left the door open tonight.",
            "The weight of the box is unknown.",
            "We met at the station and went home together.",
            "At first nobody noticed the tender tone of the letter.",
        ],
        "heldout": [
            "The village has {N} inhabitants.",
            "It weighs {N} grams and costs {N} euros.",
            "Our team won {N} games and lost {N}.",
            "She counted {L} on her list.",
            "{N} children are waiting outside.",
            "The museum received {N} visitors in May.",
            "They often eat lunch at noon.",
            "Nobody knows why the lights went out.",
        ],
    },
    "de": {
        "train": [
            "Ich habe {N} Äpfel und {N} Birnen gekauft.",
            "Sie ist {N} Jahre alt.",
            "Der Zug fährt in {N} Minuten ab.",
            "{N} Menschen kamen zum Fest.",
            "Wir sind gestern {N} Kilometer gelaufen.",
            "Das Haus kostet {N} Euro.",
            "Er hat im letzten Spiel {N} Punkte erzielt.",
            "In der Klasse sind {N} Schüler und {N} Lehrer.",
            "Die Gewinnzahlen waren {L}.",
            "Bitte addiere {N} zu {N}.",
            "Meine Großmutter wurde letzte Woche {N}.",
            "Das Buch hat {N} Seiten.",
            "Etwa {N} Autos fahren hier jeden Tag vorbei.",
            "Sie haben {N} Karten in {N} Stunden verkauft.",
            "Zimmer {N} ist links.",
            "Wir brauchen {N} Stühle, {N} Tische und {N} Teller.",
            "Die Antwort ist {N}.",
            "Zähle von {N} bis {N}.",
            "{N} von {N} Läufern kamen ins Ziel.",
            "Er hat {N} Euro für {N} Bücher bezahlt.",
            "Die Brücke ist {N} Meter lang.",
            "Ich habe es dir {N} Mal gesagt!",
            "Zwischen {N} und {N} Gäste werden erwartet.",
            "Die Ergebnisse lauteten {L}.",
            "Kapitel {N} beginnt auf Seite {N}.",
            "Unser Flug hatte {N} Minuten Verspätung.",
            "Er wohnt seit {N} Jahren hier.",
            "Nur noch {N} Plätze sind frei, also beeil dich.",
            "Für das Rezept braucht man {N} Eier und {N} Löffel Zucker.",
            "Addiere {L}.",
            "Der Akku hielt {N} Stunden.",
            "Die Firma hat dieses Jahr {N} neue Mitarbeiter eingestellt.",
            "Er läuft oft {N} Runden vor dem Frühstück.",
            "Sind es {N} oder {N}?",
            "{N}",
            "Schreib {N}",
            "Ich denke oft an jenen Sommer.",
            "Ein Mann kam herein und setzte sich.",
            "Einstein hat darüber lange nachgedacht.",
            "Wir haben uns am Bahnhof getroffen und sind zusammen heimgegangen.",
            "Eine Frau las ein Buch am Fenster.",
        ],
        "heldout": [
            "Das Dorf hat {N} Einwohner.",
            "Es wiegt {N} Gramm und kostet {N} Euro.",
            "Unsere Mannschaft hat {N} Spiele gewonnen und {N} verloren.",
            "Auf ihrer Liste standen {L}.",
            "{N} Kinder warten draußen.",
            "Das Museum zählte im Mai {N} Besucher.",
            "Sie essen oft zu Mittag im Garten.",
            "Niemand weiß, warum das Licht ausging.",
        ],
    },
    "fr": {
        "train": [
            "J'ai acheté {N} pommes et {N} poires.",
            "Elle a {N} ans.",
            "Le train part dans {N} minutes.",
            "{N} personnes sont venues à la fête.",
            "Nous avons marché {N} kilomètres hier.",
            "La maison coûte {N} euros.",
            "Il a marqué {N} points au dernier match.",
            "Il y a {N} élèves et {N} professeurs dans la classe.",
            "Les numéros gagnants étaient {L}.",
            "Ajoute {N} à {N}.",
            "Ma grand-mère a eu {N} ans la semaine dernière.",
            "Le livre a {N} pages.",
            "Environ {N} voitures passent ici chaque jour.",
            "Ils ont vendu {N} billets en {N} heures.",
            "La chambre {N} est à gauche.",
            "Il nous faut {N} chaises, {N} tables et {N} assiettes.",
            "La réponse est {N}.",
            "Compte de {N} à {N}.",
            "{N} des {N} coureurs ont terminé la course.",
            "Il a payé {N} euros pour {N} livres.",
            "Le pont mesure {N} mètres.",
            "Je te l'ai dit {N} fois !",
            "Entre {N} et {N} invités sont attendus.",
            "Les résultats étaient {L}.",
            "Le chapitre {N} commence à la page {N}.",
            "Notre vol a eu {N} minutes de retard.",
            "Il habite ici depuis {N} ans.",
            "Il ne reste que {N} places, alors dépêche-toi.",
            "La recette demande {N} oeufs et {N} cuillères de sucre.",
            "Additionne {L}.",
            "La batterie a duré {N} heures.",
            "L'entreprise a embauché {N} nouveaux employés cette année.",
            "Il court souvent {N} tours avant le petit déjeuner.",
            "C'est {N} ou {N} ?",
            "{N}",
            "Écris {N}",
            "Je pense souvent à cet été-là.",
            "Un homme est entré et s'est assis.",
            "Une femme lisait un livre près de la fenêtre.",
            "Nous nous sommes retrouvés à la gare.",
            "Personne n'a remarqué le ton tendre de la lettre.",
        ],
        "heldout": [
            "Le village compte {N} habitants.",
            "Il pèse {N} grammes et coûte {N} euros.",
            "Notre équipe a gagné {N} matchs et en a perdu {N}.",
            "Sur sa liste figuraient {L}.",
            "{N} enfants attendent dehors.",
            "Le musée a reçu {N} visiteurs en mai.",
            "Ils déjeunent souvent dans le jardin.",
            "Personne ne sait pourquoi la lumière s'est éteinte.",
        ],
    },
    "es": {
        "train": [
            "Compré {N} manzanas y {N} peras.",
            "Ella tiene {N} años.",
            "El tren sale en {N} minutos.",
            "{N} personas vinieron a la fiesta.",
            "Ayer caminamos {N} kilómetros.",
            "La casa cuesta {N} euros.",
            "Marcó {N} puntos en el último partido.",
            "Hay {N} alumnos y {N} profesores en la clase.",
            "Los números ganadores fueron {L}.",
            "Suma {N} a {N}.",
            "Mi abuela cumplió {N} años la semana pasada.",
            "El libro tiene {N} páginas.",
            "Unos {N} coches pasan por aquí cada día.",
            "Vendieron {N} entradas en {N} horas.",
            "La habitación {N} está a la izquierda.",
            "Necesitamos {N} sillas, {N} mesas y {N} platos.",
            "La respuesta es {N}.",
            "Cuenta de {N} a {N}.",
            "{N} de los {N} corredores terminaron la carrera.",
            "Pagó {N} euros por {N} libros.",
            "El puente mide {N} metros.",
            "Te lo he dicho {N} veces!",
            "Se esperan entre {N} y {N} invitados.",
            "Los resultados fueron {L}.",
            "El capítulo {N} empieza en la página {N}.",
            "Nuestro vuelo se retrasó {N} minutos.",
            "Vive aquí desde hace {N} años.",
            "Solo quedan {N} asientos, así que date prisa.",
            "La receta lleva {N} huevos y {N} cucharadas de azúcar.",
            "Suma {L}.",
            "La batería duró {N} horas.",
            "La empresa contrató a {N} trabajadores nuevos este año.",
            "A menudo corre {N} vueltas antes del desayuno.",
            "Son {N} o {N}?",
            "{N}",
            "Escribe {N}",
            "A menudo pienso en aquel verano.",
            "Un hombre entró y se sentó.",
            "Una mujer leía un libro junto a la ventana.",
            "Nos encontramos en la estación y volvimos juntos.",
            "Nadie notó el tono tierno de la carta.",
        ],
        "heldout": [
            "El pueblo tiene {N} habitantes.",
            "Pesa {N} gramos y cuesta {N} euros.",
            "Nuestro equipo ganó {N} partidos y perdió {N}.",
            "En su lista estaban {L}.",
            "{N} niños esperan fuera.",
            "El museo recibió {N} visitantes en mayo.",
            "A menudo comen en el jardín.",
            "Nadie sabe por qué se apagó la luz.",
        ],
    },
}
LIST_JOIN = {"en": " and ", "de": " und ", "fr": " et ", "es": " y "}


def ambiguous_join(prev: int, nxt: int, connector: str, lang: str) -> bool:
    """Whether two numbers joined by `connector` could read as one number: "one hundred and five",
    "three thousand, four hundred", "vingt et un", "treinta y cinco". Such pairs are not generated."""
    c = connector.strip(" ").strip(",").strip()
    if lang == "en":
        return (prev >= 100 and prev % 100 == 0 and nxt < 100) or (prev >= 1000 and prev % 1000 == 0 and nxt < 1000)
    if lang == "fr":
        return c == "et" and prev % 10 == 0 and nxt in (1, 11)
    if lang == "es":
        return c == "y" and prev % 10 == 0 and prev % 100 >= 30 and 1 <= nxt <= 9
    return False


def _span_text(n: int, lang: str, rng: random.Random, sentence_start: bool) -> str:
    r = rng.random()
    if r < 0.35:
        forms: list[str] = []
    elif r < 0.75:
        forms = [rng.choice([f for f in SPAN_FORMS[lang] if f != "canonical"])]
    else:
        forms = mixed_forms(lang, rng, span=True)
    text = apply_forms(n, lang, forms, rng)
    if sentence_start and not any(f in forms for f in CASE_FORMS):
        text = _cap(text)
    return text


def entity_example(
    lang: str, rng: random.Random, frames: str = "train", frame: str | None = None, numbers=None, round_trip=None
) -> tuple[str, str, list[str]]:
    """A sentence with its extraction target: (prompt, target, spans).

    `frames` chooses the frame set ("train" or "heldout"); `numbers` (an iterator) gives the
    numbers in order, else training numbers are drawn. `round_trip(span) -> bool` rejects spans
    the tokenizer cannot write back (capital letters T5's vocabulary lacks): another form is drawn.
    """
    frame = frame or rng.choice(FRAMES[lang][frames])
    pieces = re.split(r"(\{[NL]\})", frame)
    draw = (lambda: next(numbers)) if numbers is not None else (lambda: sample_number(rng, "entity"))

    def pick(prev: int | None, connector: str) -> int:
        for _ in range(50):
            n = draw()
            if lang in ("fr", "es") and n == 1:  # "un", "uno": the article as often as the number
                continue
            if prev is None or not ambiguous_join(prev, n, connector, lang):
                return n
        return 2  # never reached in practice

    def span(n: int, start: bool) -> str:
        for _ in range(20):
            s = _span_text(n, lang, rng, start)
            if round_trip is None or round_trip(s):
                return s
        s = words(n, lang)
        return _cap(s) if start else s

    text, spans, prev, between = "", [], None, ""
    for piece in pieces:
        if piece == "{N}":
            n = pick(prev, between)
            s = span(n, text == "")
            text += s
            spans.append(s)
            prev, between = n, ""
        elif piece == "{L}":
            k = rng.choice((2, 3, 3, 4))
            sep_last = LIST_JOIN[lang] if rng.random() < 0.8 else ", "
            for i in range(k):
                conn = "" if i == 0 else (sep_last if i == k - 1 else ", ")
                n = pick(prev if i > 0 else None, conn)
                s = span(n, text == "")
                text += conn + s
                spans.append(s)
                prev = n
            between = ""
        else:
            text += piece
            between += piece
            if piece.strip(" ,") not in ("", CONNECTOR[lang], "or", "oder", "ou", "o"):
                prev = None  # words between: no reading as one number
    if rng.random() < 0.03 and (round_trip is None or all(round_trip(s.upper()) for s in spans)):
        text, spans = text.upper(), [s.upper() for s in spans]
    target = "; ".join(f"{ENTITY_TYPE}: {s}" for s in spans)
    return ENTITY_PROMPT + text, target, spans


def parse_entities(output: str) -> list[str]:
    """The spans of a `NUMBER: a; NUMBER: b` output (parts of another shape count as spans too,
    so they are wrong, never ignored)."""
    spans = []
    for part in output.split(";"):
        part = part.strip()
        if not part:
            continue
        kind, sep, span = part.partition(":")
        spans.append(span.strip() if sep and kind.strip() == ENTITY_TYPE else "\0" + part)
    return spans

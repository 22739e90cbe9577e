"""The world model: fictional entities, their typed attributes and the relations between them.

Every task gets its own small world, drawn from the task's ``random.Random``. Facts are
therefore counterfactual from task to task ("Mira Quell" is born in 1962 in one task and
1975 in the next), which is the point: the only way to the answer is the task's tools, so a
policy cannot memorize facts across tasks and a test task cannot leak through a train task.

A world holds eight entity kinds (person, city, country, company, product, book, event,
university). Each kind has scalar attributes (``int`` or ``str``) and relations (``ref``: the
name of another entity) such as ``born_in``, ``founder``, ``capital``, ``author``. Every
relation is a function (one value per entity), so a chain of relations has one answer.

Names are built from syllables and registered per world so that no entity's base word is a
substring of another's: a gold name never hides inside a different entity's name, which would
let FTRL's substring check credit the wrong call.

Determinism: only ``random.Random`` draws, lists and insertion-ordered dicts; sets are used for
membership tests only, never iterated.

Size: about 500 lines, most of them data (the eight kinds' attribute table and the name
vocabulary). The table and the code that draws from it are one concept and read best together.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["KINDS", "AttrSpec", "Entity", "KindSpec", "Value", "World", "WorldSize"]

Value = str | int
ValueType = Literal["int", "str", "ref"]


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an entity kind, with the words needed to ask about it.

    ``questions`` ask for the attribute of ``{x}`` (a noun phrase); ``phrases`` are noun
    phrases for a relation used as an inner hop ("the founder of {x}"). ``label`` names the
    attribute in tool documents, ``gloss`` explains it.
    """

    key: str
    label: str
    gloss: str
    type: ValueType
    questions: tuple[str, ...]
    phrases: tuple[str, ...] = ()
    target: str | None = None
    """The kind a ``ref`` attribute points to."""

    @property
    def is_ref(self) -> bool:
        """Whether the attribute points to another entity (a relation) rather than holding a value."""
        return self.type == "ref"


@dataclass(frozen=True)
class KindSpec:
    """One kind of entity (person, city, company...): its attributes and the words for it."""
    key: str
    noun: str
    key_params: tuple[str, ...]
    """Names a tool may give the parameter that identifies an entity of this kind."""
    subjects: tuple[str, ...]
    """Noun-phrase templates that introduce an entity by ``{name}`` in a question."""
    attrs: tuple[AttrSpec, ...]

    def attr(self, key: str) -> AttrSpec:
        """The attribute ``key`` of this kind; ``KeyError`` when the kind has none."""
        for a in self.attrs:
            if a.key == key:
                return a
        raise KeyError(f"kind {self.key!r} has no attribute {key!r}")

    @property
    def attr_keys(self) -> tuple[str, ...]:
        """The keys of this kind's attributes, in declaration order."""
        return tuple(a.key for a in self.attrs)


def _ref(key: str, label: str, gloss: str, target: str, questions: tuple[str, ...],
         phrases: tuple[str, ...]) -> AttrSpec:
    return AttrSpec(key, label, gloss, "ref", questions, phrases, target)


def _int(key: str, label: str, gloss: str, questions: tuple[str, ...]) -> AttrSpec:
    return AttrSpec(key, label, gloss, "int", questions)


def _str(key: str, label: str, gloss: str, questions: tuple[str, ...]) -> AttrSpec:
    return AttrSpec(key, label, gloss, "str", questions)


KINDS: dict[str, KindSpec] = {
    "person": KindSpec("person", "person", ("person_name", "full_name", "name"), ("{name}",), (
        _ref("born_in", "birthplace", "the city where the person was born", "city",
             ("In which city was {x} born?", "Where was {x} born?"),
             ("the birthplace of {x}", "the city where {x} was born")),
        _ref("employer", "employer", "the company the person works for", "company",
             ("Which company does {x} work for?", "Who is the employer of {x}?"),
             ("the employer of {x}", "the company {x} works for")),
        _ref("alma_mater", "alma mater", "the university the person graduated from", "university",
             ("Which university did {x} graduate from?", "What is the alma mater of {x}?"),
             ("the alma mater of {x}", "the university {x} graduated from")),
        _int("birth_year", "birth year", "the year the person was born",
             ("In which year was {x} born?", "What is the birth year of {x}?")),
        _str("occupation", "occupation", "what the person does for a living",
             ("What is the occupation of {x}?", "What does {x} do for a living?")),
        _int("height_cm", "height", "the person's height in centimetres",
             ("How tall is {x} in centimetres?", "What is the height of {x} in cm?")),
    )),
    "city": KindSpec("city", "city", ("city", "city_name"), ("{name}", "the city of {name}"), (
        _ref("country", "country", "the country the city is in", "country",
             ("Which country is {x} in?", "In which country is {x} located?"),
             ("the country {x} is in", "the country where {x} is located")),
        _ref("mayor", "mayor", "the current mayor of the city", "person",
             ("Who is the mayor of {x}?", "Who serves as mayor of {x}?"),
             ("the mayor of {x}",)),
        _int("population", "population", "the number of inhabitants",
             ("What is the population of {x}?", "How many people live in {x}?")),
        _int("founded_year", "founding year", "the year the city was founded",
             ("In which year was {x} founded?", "When was {x} founded?")),
        _int("elevation_m", "elevation", "the elevation above sea level in metres",
             ("What is the elevation of {x} in metres?", "How high above sea level is {x}, in metres?")),
        _int("area_km2", "area", "the area in square kilometres",
             ("How large is {x} in square kilometres?", "What is the area of {x} in km2?")),
    )),
    "country": KindSpec("country", "country", ("country", "country_name"), ("{name}",), (
        _ref("capital", "capital", "the capital city", "city",
             ("What is the capital of {x}?", "Which city is the capital of {x}?"),
             ("the capital of {x}", "the capital city of {x}")),
        _ref("head_of_state", "head of state", "the current head of state", "person",
             ("Who is the head of state of {x}?",),
             ("the head of state of {x}",)),
        _int("population", "population", "the number of inhabitants",
             ("What is the population of {x}?", "How many people live in {x}?")),
        _str("currency", "currency", "the currency in use",
             ("What currency is used in {x}?", "What is the currency of {x}?")),
        _str("official_language", "official language", "the official language",
             ("What is the official language of {x}?", "Which language is official in {x}?")),
        _str("calling_code", "calling code", "the international dialling prefix",
             ("What is the international calling code of {x}?",)),
    )),
    "company": KindSpec("company", "company", ("company_name", "company", "organization"),
                        ("{name}", "the company {name}"), (
        _ref("founder", "founder", "the person who founded the company", "person",
             ("Who founded {x}?", "Who is the founder of {x}?"),
             ("the founder of {x}", "the person who founded {x}")),
        _ref("ceo", "CEO", "the current chief executive", "person",
             ("Who is the CEO of {x}?", "Who runs {x} as chief executive?"),
             ("the CEO of {x}", "the chief executive of {x}")),
        _ref("headquarters", "headquarters", "the city of the head office", "city",
             ("In which city is {x} headquartered?", "Where is {x} headquartered?"),
             ("the city where {x} is headquartered", "the headquarters city of {x}")),
        _int("founded_year", "founding year", "the year the company was founded",
             ("In which year was {x} founded?", "When was {x} founded?")),
        _str("industry", "industry", "the company's main industry",
             ("Which industry is {x} in?", "What industry does {x} operate in?")),
        _int("employees", "employees", "the number of employees",
             ("How many employees does {x} have?", "What is the headcount of {x}?")),
        _str("ticker", "stock ticker", "the stock exchange symbol",
             ("What is the stock ticker of {x}?", "Under which ticker symbol does {x} trade?")),
    )),
    "product": KindSpec("product", "product", ("product_name", "product", "model"),
                        ("the {name}", "the product {name}"), (
        _ref("maker", "maker", "the company that makes the product", "company",
             ("Which company makes {x}?", "Who manufactures {x}?"),
             ("the maker of {x}", "the company that makes {x}")),
        _ref("designer", "designer", "the person who designed the product", "person",
             ("Who designed {x}?", "Who is the designer of {x}?"),
             ("the designer of {x}", "the person who designed {x}")),
        _int("launch_year", "launch year", "the year the product was launched",
             ("In which year was {x} launched?", "When did {x} come out?")),
        _str("category", "category", "the product category",
             ("What kind of product is {x}?", "Which product category does {x} belong to?")),
        _int("price_usd", "price", "the list price in US dollars",
             ("How much does {x} cost in US dollars?", "What is the list price of {x} in USD?")),
        _int("weight_g", "weight", "the weight in grams",
             ("How much does {x} weigh in grams?", "What is the weight of {x} in grams?")),
    )),
    "book": KindSpec("book", "book", ("title", "book_title"), ('"{name}"', 'the book "{name}"'), (
        _ref("author", "author", "the person who wrote the book", "person",
             ("Who wrote {x}?", "Who is the author of {x}?"),
             ("the author of {x}", "the person who wrote {x}")),
        _ref("publisher", "publisher", "the company that published the book", "company",
             ("Which company published {x}?", "Who is the publisher of {x}?"),
             ("the publisher of {x}", "the company that published {x}")),
        _int("publication_year", "publication year", "the year of first publication",
             ("In which year was {x} published?", "When was {x} first published?")),
        _str("genre", "genre", "the literary genre",
             ("What genre is {x}?", "Which genre does {x} belong to?")),
        _int("pages", "page count", "the number of pages",
             ("How many pages does {x} have?", "What is the page count of {x}?")),
    )),
    "event": KindSpec("event", "event", ("event_name", "event"), ("the {name}",), (
        _ref("host_city", "host city", "the city where the event is held", "city",
             ("In which city is {x} held?", "Where does {x} take place?"),
             ("the host city of {x}", "the city where {x} is held")),
        _ref("organizer", "organizer", "the company that organizes the event", "company",
             ("Which company organizes {x}?", "Who is the organizer of {x}?"),
             ("the organizer of {x}", "the company that organizes {x}")),
        _ref("keynote_speaker", "keynote speaker", "the person giving the keynote", "person",
             ("Who gives the keynote at {x}?", "Who is the keynote speaker of {x}?"),
             ("the keynote speaker of {x}", "the person giving the keynote at {x}")),
        _int("first_held", "first edition", "the year the event was first held",
             ("In which year was {x} first held?", "When did {x} take place for the first time?")),
        _int("attendance", "attendance", "the number of attendees at the latest edition",
             ("How many people attend {x}?", "What is the attendance of {x}?")),
        _int("ticket_price_usd", "ticket price", "the price of a full ticket in US dollars",
             ("How much is a ticket for {x} in US dollars?", "What does a full ticket to {x} cost in USD?")),
    )),
    "university": KindSpec("university", "university", ("university", "institution", "school_name"),
                           ("{name}",), (
        _ref("city", "city", "the city where the university is located", "city",
             ("In which city is {x} located?", "Where is {x}?"),
             ("the city where {x} is located", "the home city of {x}")),
        _ref("founder", "founder", "the person who founded the university", "person",
             ("Who founded {x}?", "Who is the founder of {x}?"),
             ("the founder of {x}", "the person who founded {x}")),
        _ref("rector", "rector", "the current head of the university", "person",
             ("Who is the rector of {x}?", "Who leads {x} as rector?"),
             ("the rector of {x}", "the head of {x}")),
        _int("founded_year", "founding year", "the year the university was founded",
             ("In which year was {x} founded?", "When was {x} founded?")),
        _int("students", "enrolment", "the number of enrolled students",
             ("How many students does {x} have?", "What is the enrolment of {x}?")),
        _int("endowment_musd", "endowment", "the endowment in millions of US dollars",
             ("How large is the endowment of {x} in million USD?",)),
    )),
}

# --- names -------------------------------------------------------------------------------

_ONSETS = (
    "Al", "Ar", "Bel", "Bran", "Cal", "Cor", "Dar", "Del", "Dor", "El", "Fen", "Gal", "Gor",
    "Hal", "Has", "Ist", "Jor", "Kel", "Kor", "Lam", "Lor", "Mar", "Mel", "Nor", "Nes", "Or",
    "Pel", "Pra", "Quel", "Ral", "Ros", "Sal", "Ser", "Tal", "Tor", "Ul", "Val", "Ven", "Wes",
    "Yar", "Zan", "Zel",
)
_NUCLEI = ("", "a", "e", "i", "o", "an", "en", "ir", "or", "ul", "av", "es")
_CODAS = (
    "bard", "bek", "dan", "dor", "ford", "gard", "holm", "kan", "lin", "mar", "mont", "nard",
    "rath", "rin", "sk", "stad", "tun", "vale", "ven", "wick", "wyn", "zek", "mere", "ton",
    "dell", "garth", "rue", "quist",
)
_FIRST_NAMES = (
    "Ada", "Alric", "Anouk", "Bela", "Bram", "Cato", "Celia", "Dario", "Dagny", "Edda", "Elio",
    "Esme", "Fenna", "Fynn", "Greta", "Hale", "Ilse", "Ines", "Ivo", "Jana", "Joris", "Kaia",
    "Kasimir", "Lene", "Lior", "Maren", "Mira", "Nadia", "Nils", "Odile", "Oren", "Pia",
    "Quentin", "Rhea", "Rune", "Saskia", "Sven", "Talia", "Teodor", "Una", "Ulf", "Vera",
    "Viggo", "Wanda", "Xenia", "Yannick", "Ysolde", "Zora", "Zeno", "Amara", "Basil", "Cosima",
)
_COUNTRY_SUFFIXES = ("ia", "ora", "land", "ene", "avia", "istan")
_CITY_FORMS = ("{w}", "{w}", "{w}", "Port {w}", "New {w}", "{w} Falls", "{w} Bay")
_COMPANY_SUFFIXES = ("Group", "Holdings", "Corporation", "Industries", "Partners", "Collective", "Works")
_PRODUCT_MODELS = ("X2", "Pro", "Air", "Max", "Mini", "One", "Neo", "S3", "Lite", "Ultra")
_EVENT_NOUNS = ("Summit", "Forum", "Expo", "Festival", "Symposium", "Fair", "Congress", "Gathering")
_UNIVERSITY_FORMS = ("{w} University", "University of {w}", "{w} Institute of Technology", "{w} College")
_TITLE_ADJ = (
    "Silent", "Hidden", "Last", "Golden", "Broken", "Distant", "Burning", "Hollow", "Quiet",
    "Crimson", "Endless", "Forgotten", "Gentle", "Iron", "Lonely", "Northern", "Pale", "Salt",
    "Secret", "Winter", "Wandering", "Glass", "Paper", "Velvet",
)
_TITLE_NOUN = (
    "Orchard", "Harbor", "Lantern", "Meridian", "Archive", "Garden", "Tide", "Cartographer",
    "Bridge", "Compass", "Lighthouse", "Mirror", "Observatory", "Pilgrim", "Quarry", "River",
    "Signal", "Tower", "Voyage", "Winters", "Almanac", "Engine", "Frontier", "Kingdom",
)
_TITLE_FORMS = ("The {a} {n}", "The {n} of {w}", "{a} {n}", "A {a} {n}")

_OCCUPATIONS = (
    "architect", "botanist", "cartographer", "chemist", "civil engineer", "economist",
    "geologist", "historian", "journalist", "linguist", "marine biologist", "novelist",
    "pharmacist", "physicist", "sculptor", "software engineer", "statistician", "surgeon",
    "translator", "veterinarian", "glassblower", "astronomer",
)
_INDUSTRIES = (
    "aerospace", "agriculture", "biotechnology", "construction", "cybersecurity", "e-commerce",
    "education technology", "fashion", "fintech", "food processing", "video games", "logistics",
    "maritime shipping", "mining", "pharmaceuticals", "renewable energy", "robotics",
    "semiconductors", "telecommunications", "tourism",
)
_CURRENCIES = (
    "dalor", "krenn", "vask", "lumen", "sorrel", "tarnel", "obel", "ryal", "quint", "mirk",
    "pellet crown", "astra", "brisk", "coriander mark",
)
_LANGUAGES = (
    "Tharic", "Velmish", "Ossian", "Kerran", "Duvic", "Miraen", "Sollic", "Avren", "Pelagic",
    "Norvian", "Esterly", "Quaran",
)
_CATEGORIES = (
    "smartwatch", "espresso machine", "e-bike", "camera drone", "headphones", "air purifier",
    "3D printer", "tablet", "robot vacuum", "mirrorless camera", "mechanical keyboard",
    "smart speaker", "fitness tracker", "projector", "electric scooter",
)
_GENRES = (
    "mystery", "science fiction", "historical fiction", "biography", "poetry", "fantasy",
    "thriller", "travel writing", "philosophy", "cookbook", "romance", "popular science",
)
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True)
class WorldSize:
    """How many entities of each kind a task's world holds.

    Small on purpose: a tool embeds only a slice of it, and a fresh world per task is what keeps
    tasks distinct.
    """

    person: int = 28
    city: int = 10
    country: int = 4
    company: int = 10
    product: int = 8
    book: int = 8
    event: int = 6
    university: int = 6

    def of(self, kind: str) -> int:
        """How many entities of ``kind`` to make."""
        value = getattr(self, kind)
        assert isinstance(value, int)
        return value


@dataclass
class Entity:
    """One entity of a world: a unique ``name`` and a value per attribute (a relation holds another's name)."""
    kind: str
    name: str
    attrs: dict[str, Value] = field(default_factory=dict)


class _Names:
    """Per-world name registry: every base word is unique and no base word contains another."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words: list[str] = []
        self.full: list[str] = []

    def _clashes(self, word: str) -> bool:
        low = word.lower()
        return any(low in w or w in low for w in self.words)

    def word(self) -> str:
        rng = self.rng
        for _ in range(200):
            w = rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
            if len(w) >= 5 and not self._clashes(w):
                self.words.append(w.lower())
                return w
        raise RuntimeError("name space exhausted; use a smaller WorldSize")

    def unique(self, make: Callable[[], str]) -> str:
        """A full name that is neither inside nor around any earlier full name."""
        for _ in range(200):
            name = make()
            low = name.lower()
            if not any(low in f or f in low for f in self.full):
                self.full.append(low)
                return name
        raise RuntimeError("name space exhausted; use a smaller WorldSize")


class World:
    """A task's world: entities by kind, in creation order, and by name."""

    def __init__(self, entities: Sequence[Entity]) -> None:
        self.by_kind: dict[str, list[Entity]] = {k: [] for k in KINDS}
        self.by_name: dict[str, Entity] = {}
        for e in entities:
            self.by_kind[e.kind].append(e)
            self.by_name[e.name] = e

    def of(self, kind: str) -> list[Entity]:
        """Every entity of ``kind``, in creation order."""
        return self.by_kind[kind]

    def get(self, name: str) -> Entity:
        """The entity called ``name``; ``KeyError`` when there is none."""
        return self.by_name[name]

    @classmethod
    def build(cls, rng: random.Random, size: WorldSize | None = None) -> World:
        """Draw a world from ``rng``: names first, then scalars, then relations."""
        size = size or WorldSize()
        names = _Names(rng)
        entities: list[Entity] = []

        def add(kind: str, make: Callable[[], str]) -> list[Entity]:
            made = [Entity(kind, names.unique(make)) for _ in range(size.of(kind))]
            entities.extend(made)
            return made

        countries = add("country", lambda: names.word() + rng.choice(_COUNTRY_SUFFIXES))
        cities = add("city", lambda: rng.choice(_CITY_FORMS).format(w=names.word()))
        people = add("person", lambda: f"{rng.choice(_FIRST_NAMES)} {names.word()}")
        companies = add("company", lambda: f"{names.word()} {rng.choice(_COMPANY_SUFFIXES)}")
        products = add("product", lambda: f"{names.word()} {rng.choice(_PRODUCT_MODELS)}")
        books = add("book", lambda: rng.choice(_TITLE_FORMS).format(
            a=rng.choice(_TITLE_ADJ), n=rng.choice(_TITLE_NOUN), w=names.word()))
        events = add("event", lambda: f"{names.word()} {rng.choice(_EVENT_NOUNS)}")
        universities = add("university", lambda: rng.choice(_UNIVERSITY_FORMS).format(w=names.word()))

        def pick(pool: Sequence[Entity], *, avoid: str | None = None) -> str:
            choice = rng.choice(pool)
            while avoid is not None and choice.name == avoid and len(pool) > 1:
                choice = rng.choice(pool)
            return choice.name

        # Every country gets at least one city, so every country has a capital.
        for i, city in enumerate(cities):
            country = countries[i] if i < len(countries) else rng.choice(countries)
            city.attrs.update(
                country=country.name,
                mayor=pick(people),
                population=rng.randint(20_000, 3_000_000),
                founded_year=rng.randint(900, 1950),
                elevation_m=rng.randint(100, 2400),
                area_km2=rng.randint(30, 1500),
            )
        currencies = rng.sample(_CURRENCIES, len(countries))
        languages = rng.sample(_LANGUAGES, len(countries))
        codes = rng.sample(range(200, 999), len(countries))
        for country, currency, language, code in zip(countries, currencies, languages, codes, strict=True):
            own = [c for c in cities if c.attrs["country"] == country.name]
            country.attrs.update(
                capital=rng.choice(own).name,
                head_of_state=pick(people),
                population=rng.randint(1_000_000, 90_000_000),
                currency=currency,
                official_language=language,
                calling_code=f"+{code}",
            )
        for person in people:
            person.attrs.update(
                born_in=pick(cities),
                employer=pick(companies),
                alma_mater=pick(universities),
                birth_year=rng.randint(1930, 2002),
                occupation=rng.choice(_OCCUPATIONS),
                height_cm=rng.randint(150, 199),
            )
        tickers: list[str] = []
        for company in companies:
            founder = pick(people)
            ticker = "".join(rng.choice(_LETTERS) for _ in range(4))
            while ticker in tickers:
                ticker = "".join(rng.choice(_LETTERS) for _ in range(4))
            tickers.append(ticker)
            company.attrs.update(
                founder=founder,
                ceo=pick(people, avoid=founder),
                headquarters=pick(cities),
                founded_year=rng.randint(1850, 2020),
                industry=rng.choice(_INDUSTRIES),
                employees=rng.randint(120, 250_000),
                ticker=ticker,
            )
        for product in products:
            product.attrs.update(
                maker=pick(companies),
                designer=pick(people),
                launch_year=rng.randint(2005, 2024),
                category=rng.choice(_CATEGORIES),
                price_usd=rng.randint(19, 2999),
                weight_g=rng.randint(120, 25_000),
            )
        for book in books:
            book.attrs.update(
                author=pick(people),
                publisher=pick(companies),
                publication_year=rng.randint(1850, 2023),
                genre=rng.choice(_GENRES),
                pages=rng.randint(110, 1200),
            )
        for event in events:
            event.attrs.update(
                host_city=pick(cities),
                organizer=pick(companies),
                keynote_speaker=pick(people),
                first_held=rng.randint(1950, 2020),
                attendance=rng.randint(800, 250_000),
                ticket_price_usd=rng.randint(115, 900),
            )
        for uni in universities:
            founder = pick(people)
            uni.attrs.update(
                city=pick(cities),
                founder=founder,
                rector=pick(people, avoid=founder),
                founded_year=rng.randint(1200, 1990),
                students=rng.randint(1_500, 60_000),
                endowment_musd=rng.randint(150, 40_000),
            )
        world = cls(entities)
        world._check()
        return world

    def _check(self) -> None:
        """Check the invariant the question builder relies on.

        Every attribute the kind declares is set, and every relation points at an entity of the
        declared kind.
        """
        for kind, spec in KINDS.items():
            for entity in self.of(kind):
                for attr in spec.attrs:
                    value = entity.attrs[attr.key]
                    if attr.is_ref:
                        assert isinstance(value, str) and self.by_name[value].kind == attr.target

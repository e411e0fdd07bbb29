"""People in the user's life and their preferences (PersonaMem-v2's ``who = others``).

A user talks about more than themselves: "my sister just went vegan". Each persona gets a few
people (a partner, a kid, a friend ...), each liking a handful of options on everyday topics.
They come from their own seeded streams (``"others"`` and ``"others-faker"``), drawn after
everything else, so a persona's own preferences, demographics and sensitive facts are exactly
what they were before people existed. The sentences that reveal them (explicitly or by a hint)
and the ground-truth statement live here too, so the scripted user, the LLM-user prompt and the
benchmark phrase a person the same way.
"""

from __future__ import annotations

import random
import re
from datetime import datetime

from faker import Faker

from personasim.personas.catalog import HINT_KINDS, HintKind, Topic, TopicCatalog, TopicOption
from personasim.personas.models import Demographics, Person, Polarity, Preference, Relation, others_preference_id
from personasim.personas.seeding import derive_seed, rng_for

RELATIONS: tuple[Relation, ...] = (
    "partner", "child", "sister", "brother", "mother", "father", "friend", "colleague", "roommate",
)
#: Relations whose gender is fixed; the others are drawn.
_GENDER_OF: dict[str, str] = {"sister": "woman", "mother": "woman", "brother": "man", "father": "man"}
#: Domains whose topics make sense for someone else ("plan a dinner for my sister", "a gift for my friend").
OTHERS_DOMAINS = ("entertainment", "fitness", "food", "hobbies", "pets", "shopping", "travel", "wellness")

_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|me|mine|we|we're|we've|our|ours|us)\b")
#: A label such as "long hikes with my dog" cannot be said about someone else.
_FIRST_PERSON_LABEL = re.compile(r"\b(I|my|me|myself|mine|we|our|us)\b")
#: "skipping breakfast", "not cooking at all": an absence, which nobody is said to love.
_ABSENCE = re.compile(r"(no|not|skipping|avoiding|never|none|without|rarely)\b", re.IGNORECASE)

EXPLICIT_TEMPLATES = (
    "My {who} loves {label}.",
    "My {who} is really into {label}.",
    "My {who} is a big fan of {label}.",
    "My {who} always goes for {label} when {subj} can.",
    "{name}, my {title}, can't get enough of {label}.",
    "My {who} would pick {label} every time.",
)
HINT_TEMPLATES: dict[HintKind, tuple[str, ...]] = {
    "behaviour": ("These days my {who} keeps {cue}.", "Most weeks my {who} ends up {cue}."),
    "circumstance": (
        "These days my {who} is {cue} more often than not.",
        "With the way life is for my {who} right now, {subj} {is} {cue} most days.",
    ),
    "complaint": (
        "I tease my {who} about always {cue}.",
        "My {who} never stops {cue}, and it drives me a little mad.",
    ),
    "comparison": (
        "Compared to anyone else I know, my {who} spends far more time {cue}.",
        "Out of everyone I know, my {who} is the one always {cue}.",
    ),
    "anecdote": (
        "Last weekend my {who} spent the whole afternoon {cue}.",
        "When I saw my {who} last week, {subj} {was} {cue} again.",
    ),
}
#: The ground truth, in PersonaMem-v2's third person ("The user enjoys eating pizza.").
TRUTH_TEMPLATE = "The user's {who} likes {label}."
#: A reply personalised to what a person likes; every option of a question uses the same one.
RESPONSE_TEMPLATES = {
    "exclusive": "Since your {who} prefers {label}, {detail}",
    "multi": "Since your {who} enjoys {label}, {detail}",
}


def person_from_owner(owner: str) -> Person:
    """The person an owner key (``sister:Anna``) names; gender unknown, so only for gender-free text."""
    relation, _, name = owner.partition(":")
    return Person(relation=relation, name=name)  # type: ignore[arg-type]


# -- sentences ------------------------------------------------------------------------------------
def usable_cues(option: TopicOption, person: Person) -> list[str]:
    """The option's cues retold about ``person``: "my" becomes "her" (or "his", "their"); cues
    that speak for the user in other ways ("I", "me", "we") cannot be retold and are skipped."""
    pron = person.pronouns
    out = []
    for cue in option.cues:
        if _FIRST_PERSON.search(cue):
            continue
        out.append(re.sub(r"\bmyself\b", pron["refl"], re.sub(r"\bmy\b", pron["poss"], cue)))
    return out


def others_statements(catalog: TopicCatalog, person: Person, topic_id: str, option_id: str) -> list[str]:
    """Explicit sentences the user says about ``person`` liking the option ("My sister Anna loves Thai food.")."""
    label = catalog.topic(topic_id).option(option_id).label
    fields = _fields(person)
    return [_capitalise(t.format(label=label, **fields)) for t in EXPLICIT_TEMPLATES]


def others_hints(
    catalog: TopicCatalog, person: Person, topic_id: str, option_id: str, kind: HintKind | None = None
) -> list[str]:
    """Implicit hints about ``person``: their behaviour, never the option's name. A frame that would
    name the option (a person called Rose, liking rosé) is skipped."""
    option = catalog.topic(topic_id).option(option_id)
    cues = usable_cues(option, person)
    fields = _fields(person)
    out = []
    for k in [kind] if kind else list(HINT_KINDS):
        for template in HINT_TEMPLATES[k]:
            frame = template.format(cue=" ", **fields)
            if option.naming_pattern.search(frame):
                continue
            out += [_capitalise(template.format(cue=cue, **fields)) for cue in cues]
    return out


def hint_kinds_for(catalog: TopicCatalog, person: Person, topic_id: str, option_id: str) -> list[HintKind]:
    """The hint kinds that have at least one sentence for this person and option."""
    return [k for k in HINT_KINDS if others_hints(catalog, person, topic_id, option_id, k)]


def truth_statement(catalog: TopicCatalog, person: Person, topic_id: str, option_id: str) -> str:
    label = catalog.topic(topic_id).option(option_id).label
    return TRUTH_TEMPLATE.format(who=person.mention, label=label)


def others_response(catalog: TopicCatalog, person: Person, topic_id: str, option_id: str) -> str:
    """The assistant advice personalised to ``person`` liking the option."""
    topic = catalog.topic(topic_id)
    option = topic.option(option_id)
    return RESPONSE_TEMPLATES[topic.kind].format(who=person.mention, label=option.label, detail=option.detail)


def _fields(person: Person) -> dict[str, str]:
    pron = person.pronouns
    return {"who": person.mention, "name": person.name, "title": person.title, "subj": pron["subj"],
            "is": pron["is"], "was": pron["was"]}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- generation -----------------------------------------------------------------------------------
TopicPool = tuple[tuple[Topic, tuple[str, ...]], ...]


def topic_pool(catalog: TopicCatalog) -> TopicPool:
    """Everyday topics and, per topic, the options that can be hinted at about someone else."""
    probe = Person(relation="friend", name="Sam")
    pool = []
    for topic in sorted(catalog.topics, key=lambda t: t.id):
        if topic.domain not in OTHERS_DOMAINS or topic.sensitive or topic.statement_templates or topic.likes_only:
            continue
        options = tuple(
            o.id for o in topic.options
            if usable_cues(o, probe) and not _FIRST_PERSON_LABEL.search(o.label) and not _ABSENCE.match(o.label)
        )
        if options:
            pool.append((topic, options))
    return tuple(pool)


def generate_people(
    catalog: TopicCatalog, fake: Faker, seed: int, index: int, persona_id: str, demographics: Demographics,
    start: datetime, n_people: tuple[int, int], n_preferences: tuple[int, int], pool: TopicPool | None = None,
) -> tuple[list[Person], list[Preference]]:
    """The people in one user's life and what they like, from the ``others`` streams only.

    Relations are distinct (one sister at most), so ``relation:name`` is a unique owner; a kid
    needs a user of 25 or more, parents a user of 70 or less."""
    rng = rng_for(seed, "others", index)
    fake.seed_instance(derive_seed(seed, "others-faker", index))
    allowed = [r for r in RELATIONS if not (r == "child" and demographics.age < 25)
               and not (r in ("mother", "father") and demographics.age > 70)]
    count = min(rng.randint(*n_people), len(allowed))
    pool = pool if pool is not None else topic_pool(catalog)
    people: list[Person] = []
    prefs: list[Preference] = []
    for relation in rng.sample(allowed, count):
        gender = _GENDER_OF.get(relation) or rng.choices(("woman", "man", "non-binary"), weights=(48, 48, 4))[0]
        person = Person(relation=relation, name=_first_name(fake, gender), gender=gender)
        people.append(person)
        for topic, options in rng.sample(pool, min(rng.randint(*n_preferences), len(pool))):
            option_id = rng.choice(options)
            prefs.append(_preference(catalog, person, persona_id, topic, option_id, rng, start))
    return people, prefs


def _first_name(fake: Faker, gender: str) -> str:
    if gender == "woman":
        name = fake.first_name_female()
    elif gender == "man":
        name = fake.first_name_male()
    else:
        name = fake.first_name()
    return name.split()[0]  # one word: it is part of an id


def _preference(
    catalog: TopicCatalog, person: Person, persona_id: str, topic: Topic, option_id: str, rng: random.Random,
    start: datetime,
) -> Preference:
    return Preference(
        id=others_preference_id(persona_id, person.owner, topic.id, option_id),
        persona_id=persona_id, domain=topic.domain, topic=topic.id, option=option_id,
        statement=truth_statement(catalog, person, topic.id, option_id), polarity=Polarity.LIKES,
        strength=round(rng.uniform(0.4, 1.0), 3), valid_from=start, valid_to=None, owner=person.owner,
    )

"""Captions of the generated world: a small grammar over the 28 sub-categories and normal scenes.

A caption is drawn from templates with slots (``{who}``, ``{where}``, ...) filled from word
lists, all with one seeded random generator, so a world's corpus is a pure function of its seed.
Three kinds:

- **anomalous**: a template of one of the 28 sub-categories of :mod:`prevad.taxonomy`
  ("a car crashes into a truck on a highway");
- **normal**: an everyday scene ("people walk through a market");
- **misleading**: normal videos whose words sound like an anomaly ("a man kicks a ball",
  "fireworks at night", "a controlled demolition video game"), the hard negatives of retrieval.
"""

from __future__ import annotations

import numpy as np

from prevad import taxonomy

SLOTS: dict[str, tuple[str, ...]] = {
    "who": ("a man", "a woman", "two men", "a group of people", "a teenager", "an old man",
            "a worker", "a driver", "a boy", "a girl"),
    "where": ("on a highway", "in a parking lot", "at night", "on a busy street", "in a warehouse",
              "near a shop", "in a small town", "on camera", "in the city", "at an intersection"),
    "vehicle": ("a car", "a truck", "a motorbike", "a bus", "a van", "a taxi"),
    "animal": ("a lion", "a dog", "a bear", "a tiger", "a bull", "a crocodile", "a wolf"),
    "prey": ("a zebra", "a deer", "an antelope", "a rabbit", "a buffalo"),
    "object": ("a phone", "a glass", "a box of plates", "a laptop", "a bottle", "a tray"),
    "place": ("a market", "a park", "a kitchen", "an office", "a beach", "a school yard",
              "a train station", "a supermarket", "a living room", "a garden"),
    "activity": ("walk", "talk", "cook dinner", "play cards", "ride bicycles", "wait in line",
                 "shop for groceries", "sit on a bench", "jog", "read"),
}

#: Templates per sub-category (every one of the 28 has at least two).
ANOMALOUS: dict[str, tuple[str, ...]] = {
    "Air Accident": ("a small plane crashes {where}", "a helicopter falls from the sky",
                     "an airplane skids off the runway and burns"),
    "Train Accident": ("a train derails {where}", "a train hits {vehicle} at a crossing",
                       "two trains collide"),
    "Car Accident": ("{vehicle} crashes into {vehicle} {where}", "a car flips over on a highway",
                     "{vehicle} hits a pedestrian {where}"),
    "Vandalism": ("{who} smashes the windows of {vehicle}", "{who} spray paints a shop and "
                  "breaks the door", "vandals wreck a bus stop {where}"),
    "Crowd Violence": ("a crowd fights {where}", "fans brawl in the stands",
                       "a mob beats people {where}"),
    "Riot": ("rioters throw stones at police {where}", "a riot with burning barricades",
             "protesters clash with police and set fires"),
    "Assault": ("{who} punches {who} {where}", "{who} attacks a stranger {where}",
                "{who} is beaten up near a shop"),
    "Range Shooting": ("a gunman fires at people {where}", "shots are fired at a crowd",
                       "{who} opens fire {where}"),
    "Shooting Accident": ("a gun goes off by accident", "{who} is hit by a stray bullet",
                          "a hunting rifle fires by mistake"),
    "War": ("soldiers fight in a ruined street", "artillery shells hit a village",
            "tanks fire during a battle"),
    "Carjacking": ("{who} is pulled out of {vehicle} and robbed", "armed men steal a car "
                   "{where}", "a driver is forced out of a taxi at gunpoint"),
    "Mugging": ("{who} snatches a bag and runs", "{who} is robbed at knifepoint {where}",
                "a thief grabs a phone from {who}"),
    "Store Robbery": ("an armed robber threatens a cashier", "masked men rob a store",
                      "a robber points a gun at a shopkeeper"),
    "Mechanical Accident": ("a machine catches {who}'s arm", "a crane drops its load",
                            "a forklift tips over in a warehouse"),
    "Object Impact": ("a heavy crate falls on {who}", "a falling pipe hits a worker",
                      "a tree falls on {vehicle}"),
    "Collapse": ("a building collapses {where}", "a bridge falls into the river",
                 "scaffolding collapses on workers"),
    "Fall from Height": ("a worker falls from a roof", "{who} falls off a ladder",
                         "a climber falls from a cliff"),
    "Fume": ("toxic smoke pours out of a factory", "thick fumes fill a tunnel",
             "a chemical leak sends gas over {where}"),
    "Fire": ("a house is on fire {where}", "flames engulf {vehicle}", "a warehouse burns"),
    "Explosion": ("a gas tank explodes {where}", "an explosion rips through a factory",
                  "{vehicle} blows up"),
    "Predation": ("{animal} hunts {prey}", "{animal} catches and kills {prey}",
                  "a pack of wolves takes down {prey}"),
    "Animal Attack Animal": ("{animal} attacks a dog", "two bulls fight violently",
                             "{animal} mauls another animal"),
    "Animal Attack Human": ("{animal} attacks {who}", "a dog bites a child",
                            "a bull gores a man in the street"),
    "Sport Fail": ("a skier crashes hard on the slope", "a skateboarder slams into a rail",
                   "a cyclist crashes during a race"),
    "Stunt Fail": ("a motorbike stunt goes wrong", "{who} fails a backflip and lands on the "
                   "head", "a parkour jump ends in a fall"),
    "Fall into Water": ("{who} falls into a river", "a car drives off a pier into the water",
                        "{who} slips off a boat into the sea"),
    "Fall to the Ground": ("{who} slips on ice and falls", "an old man falls down the stairs",
                           "{who} trips and falls hard {where}"),
    "Drop Something": ("{who} drops {object} and it shatters", "a waiter drops {object}",
                       "{who} drops a television"),
}

NORMAL: tuple[str, ...] = (
    "people {activity} in {place}", "{who} {activity}s in {place}",
    "a quiet street with parked cars", "traffic moves slowly {where}",
    "{who} talks to a friend in {place}", "a cooking show in {place}",
    "children play in {place}", "a dog sleeps on the sofa", "waves roll onto {place}",
    "a time lapse of clouds over the city", "{who} shows a new phone", "a band plays on stage",
    "a man explains a recipe", "cars wait at a red light", "a cat plays with a toy",
)

#: Normal scenes described with words of anomalies (retrieval's hard negatives).
MISLEADING: tuple[str, ...] = (
    "a man kicks a ball", "fireworks at night", "a boxing training session with pads",
    "a fire breathing performance at a festival", "a car crash scene in a video game",
    "kids shoot water guns in the garden", "a cooking flame show in a restaurant",
    "a controlled demolition in a video game", "a movie about a bank robbery, trailer",
    "firefighters train with a smoke machine", "a cat knocks a toy off the table",
    "people fall on purpose into a pool at a party",
)

KINDS = ("anomalous", "normal", "misleading")


def _fill(template: str, rng: np.random.Generator) -> str:
    out = template
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        words = SLOTS[out[start + 1 : end]]
        out = out[:start] + words[int(rng.integers(len(words)))] + out[end + 1 :]
    return out


def caption(kind: str, rng: np.random.Generator, category: str | None = None) -> str:
    """One caption of ``kind`` (``category`` is the sub-category of an anomalous caption).

    Raises:
        ValueError: an unknown kind, or an anomalous caption without a sub-category.
    """
    if kind == "anomalous":
        if category not in ANOMALOUS:
            raise ValueError(f"anomalous captions need one of the 28 sub-categories, got "
                             f"{category!r}")
        pool = ANOMALOUS[category]
    elif kind == "normal":
        pool = NORMAL
    elif kind == "misleading":
        pool = MISLEADING
    else:
        raise ValueError(f"caption kind must be one of {KINDS}, got {kind!r}")
    return _fill(pool[int(rng.integers(len(pool)))], rng)


def descriptions(category: str, n: int = 3) -> list[str]:
    """Up to ``n`` plain sentences describing a sub-category or top-level class (definitions).

    A top-level class is described by the first template of each of its sub-categories.
    """
    subs = [category] if category in ANOMALOUS else taxonomy.children(category)
    out = []
    for s in subs:
        for t in ANOMALOUS[s]:
            if "{" not in t:
                out.append(t[0].upper() + t[1:] + ".")
                break
    return out[:n] or [f"{category}."]


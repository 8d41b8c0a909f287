"""Generate the bundled sample exports: examples/sample-discord.json and examples/sample-whatsapp.txt.

Standard library only, fixed seed, byte-identical output on every run and platform:

    python examples/generate_sample.py            # rewrite both files next to this script
    python examples/generate_sample.py --out DIR  # write them somewhere else
    python examples/generate_sample.py --stats    # print the persona's style markers (README table)

A few friends chat over four months (games, food, weekend plans, work/school, music, memes, a cabin trip).
One of them, Juno (Discord `junebug`, nickname "Juno"; WhatsApp "Juno"), has a measurable style: always
lowercase (except "LMAO"), no final periods, no apostrophes, bursts of 1-4 messages, slang ("fr", "ngl",
"lowkey", "bestie", "ok but", "deadass"), stretched words ("sooo"), signature emoji (💀 ✨ 🫠), never "haha".
The others write capitalised, punctuated, longer single messages.

bench/prepare.py imports this module (`write_discord`, `write_whatsapp`, `SimConfig`) to write exports of
any size with the same phrase machinery.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal, TextIO

SEED = 20240419
DISCORD_MESSAGES = 2200
WHATSAPP_MESSAGES = 2600
DISCORD_FILE = "sample-discord.json"
WHATSAPP_FILE = "sample-whatsapp.txt"

# ---------------------------------------------------------------------------------------------------
# Cast
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Person:
    key: str
    discord_id: str
    discord_name: str
    nickname: str
    whatsapp_name: str
    first_name: str
    color: str | None
    avatar_hash: str
    discriminator: str = "0000"
    is_bot: bool = False


JUNO = Person("juno", "689214055735361547", "junebug", "Juno", "Juno", "Juno", "#F47FFF", "3f1c9a7be2d04c55")
SAM = Person("sam", "402215853201620993", "samc", "Sam", "Sam Carter", "Sam", "#3498DB", "a81d0c4e6b2f7d10")
PRIYA = Person(
    "priya", "512907340198772736", "priya.k", "Priya", "Priya", "Priya", "#1ABC9C", "0b6e2f99c1d3a874"
)
THEO = Person(
    "theo", "771043298860531742", "theo_m", "Theo", "Theo Marsh", "Theo", "#E67E22", "5d2c8e01f7ab3369"
)
# No server nickname: DiscordChatExporter then repeats the username as the nickname.
MARCUS = Person(
    "marcus", "880266105930629120", "mxrcus", "mxrcus", "Marcus 🎸", "Marcus", None, "c4a0e7d2918b5f63"
)
# Only in the WhatsApp group: a friend-of-a-friend who is not in the exporter's contacts.
DANI = Person("dani", "0", "dani", "Dani", "\u202a+1 555 0123\u202c", "Dani", None, "")
JUKEBOX = Person(
    "jukebox", "235088799074484224", "Jukebox", "Jukebox", "", "Jukebox", None, "9e3b1f7a", "7613", True
)

DISCORD_HUMANS = (JUNO, SAM, PRIYA, THEO, MARCUS)
WHATSAPP_HUMANS = (JUNO, SAM, PRIYA, THEO, MARCUS, DANI)
PEOPLE = {p.key: p for p in (*WHATSAPP_HUMANS, JUKEBOX)}
# How often each friend speaks up (Juno is scripted separately).
OTHER_WEIGHTS = {"sam": 1.0, "priya": 0.9, "theo": 0.8, "marcus": 0.6, "dani": 0.1}

GUILD = {
    "id": "1079418375309819904",
    "name": "the group chat",
    "iconUrl": "https://cdn.discordapp.com/icons/1079418375309819904/7a1c4e2b9d0f3a6e5b8c1d2e3f4a5b6c.png",
}
CHANNEL = {
    "id": "1079418375997681725",
    "type": "GuildTextChat",
    "categoryId": "1079418375997681724",
    "category": "Text Channels",
    "name": "general",
    "topic": "no thoughts just vibes",
}
WHATSAPP_GROUP = "Weekend crew 🏕️"
TRIP_START = date(2024, 4, 19)

# ---------------------------------------------------------------------------------------------------
# Juno's style
# ---------------------------------------------------------------------------------------------------

SIGNATURE_EMOJI = ("💀", "✨", "🫠")
SLANG = ("fr", "ngl", "lowkey", "bestie", "ok but", "deadass")
SLANG_RE = re.compile(r"\b(?:fr|ngl|lowkey|bestie|ok but|deadass)\b")
STRETCHED_RE = re.compile(r"([a-z])\1\1")  # three or more of one letter: sooo, nooo, yesss
URL_RE = re.compile(r"https?://\S+")
BURST_WEIGHTS = {1: 0.36, 2: 0.30, 3: 0.21, 4: 0.13}

_PREFIX_SLANG = ("ngl ", "lowkey ", "ok but ", "deadass ", "bestie ")
_SUFFIX_SLANG = (" fr", " ngl", " lowkey", " bestie", " fr fr")
_STRETCH = {
    "so": "sooo",
    "no": "nooo",
    "yes": "yesss",
    "omg": "omggg",
    "please": "pleaseee",
    "pls": "plsss",
    "wait": "waittt",
    "love": "loveee",
    "same": "sameee",
    "why": "whyyy",
    "cute": "cuteee",
    "stop": "stoppp",
    "good": "goood",
    "tired": "tireddd",
}
_STRETCH_RE = re.compile(r"\b(" + "|".join(_STRETCH) + r")\b")
_LMAO_RE = re.compile(r"\blmao\b")


def juno_style(text: str, rng: random.Random) -> str:
    """Rewrite a line in Juno's voice. Rates are per message; the README lists the measured results."""
    t = text.lower().replace("'", "").replace("’", "")
    t = re.sub(r"\.(\s)", r"\1", t).rstrip(". !").strip()
    plain = not any(e in t for e in SIGNATURE_EMOJI) and t not in ("lmao",)
    if plain and not SLANG_RE.search(t) and len(t) > 6:
        roll = rng.random()
        if roll < 0.17:
            t = rng.choice(_PREFIX_SLANG) + t
        elif roll < 0.29 and not t.endswith("?"):
            t = t + rng.choice(_SUFFIX_SLANG)
    if plain and rng.random() < 0.45:
        t = _STRETCH_RE.sub(lambda m: _STRETCH[m.group(1)], t, count=1)
    if plain and rng.random() < 0.11:
        t = t + " " + rng.choices(SIGNATURE_EMOJI, weights=(5, 3, 2))[0]
    if plain and rng.random() < 0.03:
        t = "lmao " + t
    return _LMAO_RE.sub("LMAO", t)


# Short follow-ups Juno adds to a burst, on any topic.
JUNO_EXTRAS = (
    "fr",
    "wait",
    "ok but hear me out",
    "im crying",
    "no bc why is this so real",
    "LMAO",
    "💀",
    "✨",
    "🫠",
    "lowkey yes",
    "deadass",
    "bestie pls",
    "no",
    "ngl same",
    "this is so me",
    "we move",
    "its giving chaos",
    "ok that settles it",
    "brb",
    "i cant",
    "real",
    "literally",
    "stop",
    "ok im back",
    "anyway",
    "yes",
    "omg",
    "wait what",
    "so true",
    "im so tired",
    "love that for us",
    "the way i just said that out loud",
    "ok focus",
    "not me typing that with my whole chest",
)

# ---------------------------------------------------------------------------------------------------
# Phrase banks
# ---------------------------------------------------------------------------------------------------
# A thread is a short scripted exchange. Each line is `[?]ROLE[=][^][*]: option | option | ...`:
#   ROLE  A, B, C = three different friends picked at random; a person key (sam, priya, ...) = that friend;
#         J = Juno, extended into a burst of 1-4 messages; J1 = Juno, exactly one message; BOT = Jukebox.
#   ?     the line is optional (kept half of the time).
#   =     pick the option at the same position as the line before (when both have as many options),
#         so an answer matches the question that was asked.
#   ^     Discord: the message may reply to the thread's first message (`reference`).
#   *     Discord: the message gets pinned; a later `{pin}` line posts the pin notice.
# Option text: `{slot}` picks a word from SLOTS (one value per thread); `{A}`/`{B}`/`{C}` name the friend,
# `{J}` names Juno; ` // ` is a line break; `[photo]`, `[video]`, `[gif]` make a media message (the rest
# is the caption); `{call}` posts a Discord call notice; `{pin}` the pin notice.
# Header lines: `@discord` / `@whatsapp` (platform only), `@once` (used at most once), `@phase=NAME`
# (trip threads: plan, book, during, after; `opening` = the Discord welcome, run first).

SLOTS: dict[str, tuple[str, ...]] = {
    "game": (
        "Mario Kart",
        "Stardew",
        "Valorant",
        "Overcooked",
        "Minecraft",
        "Rocket League",
        "Lethal Company",
        "Jackbox",
        "Baldur's Gate",
        "Hades",
        "Phasmophobia",
        "It Takes Two",
    ),
    "food": (
        "ramen",
        "tacos",
        "pho",
        "pizza",
        "dumplings",
        "sushi",
        "Thai food",
        "burgers",
        "curry",
        "bibimbap",
        "hot pot",
        "pasta",
    ),
    "spot": (
        "Noodle Bar",
        "Taco Loco",
        "Golden Dragon",
        "Pho Real",
        "Slice Slice Baby",
        "Mama Rosa's",
        "Hot Pot Palace",
        "the Korean place on 5th",
        "the food trucks by the park",
        "Bao Down",
    ),
    "artist": (
        "Mitski",
        "Phoebe Bridgers",
        "Tame Impala",
        "Fleetwood Mac",
        "beabadoobee",
        "Japanese Breakfast",
        "Daft Punk",
        "boygenius",
        "Remi Wolf",
        "The Strokes",
        "SZA",
        "Laufey",
        "Khruangbin",
    ),
    "show": (
        "Severance",
        "The Bear",
        "Arcane",
        "Shogun",
        "Bake Off",
        "Frieren",
        "Blue Eye Samurai",
        "Only Murders",
    ),
    "movie": ("Dune Part Two", "Challengers", "Kung Fu Panda 4", "Godzilla x Kong", "Furiosa", "Civil War"),
    "activity": (
        "hiking at Eagle Ridge",
        "the farmers market",
        "bowling",
        "thrifting",
        "mini golf",
        "the board game cafe",
        "the beach",
        "the night market",
        "a pottery class",
        "the climbing gym",
    ),
    "day": ("Saturday", "Sunday", "Friday night", "Saturday morning", "Sunday afternoon"),
    "time": ("6", "7", "7:30", "8", "8:30", "noon"),
    "class": ("typography", "color theory", "3d modeling", "art history", "figure drawing", "ux studio"),
    "deadline": (
        "sprint review",
        "on-call week",
        "anatomy exam",
        "parent-teacher night",
        "quarterly report",
        "code freeze",
        "pharmacology quiz",
    ),
    "pet": ("cat", "dog", "neighbour's cat", "roommate's parrot"),
    "n": ("2", "3", "4", "5", "6", "7", "11", "12", "15", "17", "19", "20"),
    "dur": ("3:12", "3:41", "4:05", "2:58", "5:17", "3:33"),
}
SONGS = (
    ("Motion Sickness", "Phoebe Bridgers"),
    ("Get Lucky", "Daft Punk"),
    ("Dreams", "Fleetwood Mac"),
    ("Kill Bill", "SZA"),
    ("Let It Happen", "Tame Impala"),
    ("Nobody", "Mitski"),
    ("505", "Arctic Monkeys"),
    ("Coffee", "beabadoobee"),
    ("Be Sweet", "Japanese Breakfast"),
    ("Reptilia", "The Strokes"),
    ("From Michael", "Laufey"),
)

THREADS: dict[str, list[str]] = {
    "games": [
        """
        A: Anyone up for {game} tonight? | Is anyone playing {game} later? I finally have a free evening. | {game} at {time}? I need to get out of bronze.
        J^: im in | ok but only casual i cant do ranked rn | give me like 20 min im still eating | yes please i need to scream at something
        B: Count me in too. | I'm in if we start before ten. | Can't tonight, I have an early start. Have fun!
        A: Great, invite goes out at {time}. | Perfect, see you in the lobby. | Nice. {J}, you're on snacks duty, metaphorically.
        ?J1: bet | see u there | ok omw
        """,
        """
        J: who wants to get destroyed in {game} | {game} tonight or are we all boring now | i just got so good at {game} its actually scary
        A: Big words. I'm in. | Is this like last time when you lost to me five times in a row? | You're on. What time?
        J=^: bring it | that was lag and you know it | after dinner
        ?B: I'll join after I finish this episode. | Save me a spot!
        A: Deal. | Okay, I'll bring the trash talk.
        """,
        """
        @discord
        A: Hopping in voice now if anyone wants to play. | Voice chat in 5? | Opening the lobby, jump in.
        J1: coming | ok one sec | omw
        A: {call}
        ?B: GG everyone, that last round was chaos. | That was fun, same time tomorrow?
        ?J: gg | i was carrying and i want that on record | my hands are shaking
        """,
        """
        A: Has anyone tried {game}? It's on sale this week. | Is {game} worth it? Everyone keeps talking about it. | Thinking of buying {game}, thoughts?
        J^: yes its so good | i played like 40 hours last month dont look at my steam | ok but the first hour is slow just push through | buy it we can play together
        A: Okay you've convinced me. | That's a strong endorsement. | Buying it now.
        ?B: Same, I'll pick it up tonight.
        J: welcome to the cult | i will be your guide | dont look up spoilers pls
        """,
        """
        A: I just rage quit {game} for the third time today. | Why is the last boss in {game} so hard? | {game} matchmaking is broken, I swear.
        J=: skill issue | that boss ate my whole weekend | no bc same it put me with bots all night
        A=: Rude but fair. | Any tips? | Glad it's not just me.
        ?J=: take a break and come back its always easier | dodge left and spam heals | its the servers they always break on fridays
        """,
        """
        J: ok but {game} tournament this weekend | im making brackets | loser buys boba
        A: Only if I'm not in your bracket. | I'm in. | What are the rules?
        B: Saturday works for me. | I can do {day} after lunch.
        J: perfect | brackets drop tomorrow | no crying allowed
        ?A: No promises.
        """,
        """
        A: Who stole my spot on the {game} leaderboard? | Okay who beat my high score in {game}? | Somebody just got a personal best in {game} and I need to know who.
        J1: that would be me | hi yes it was me | guilty
        A: Unbelievable. | Rematch. Tonight. | I'm taking it back by Friday.
        J: i would love to see u try | good luck bestie | im framing that screenshot
        """,
        """
        A: Patch notes for {game} just dropped and they nerfed everything I like. | Did you see the {game} update? | New {game} season starts today!
        J: no way | wait what did they change | they always do this | im not ready
        B: They reworked the maps too. It looks really good honestly. | Honestly the changes look fine to me.
        ?J: ok that actually sounds fun | fine ill try it
        """,
        """
        A: Game night at my place {day}? I'll do pizza. | Board games {day}? I finally bought Wingspan. | Anyone want to do a Jackbox night {day}?
        J^: yes yes yes | im there | can i bring my roommate | only if im on your team
        B: I'm in! | Count me in, I'll bring drinks.
        ?C: I might be late but I'll come.
        A: Great, {time} at mine then. | Awesome, see everyone at {time}.
        """,
    ],
    "food": [
        """
        A: I'm craving {food}. Anyone want to get food tonight? | Dinner tonight? I'm thinking {food}. | Who wants {food}?
        J^: me | always | {spot} or bust | ok but can we go somewhere with dessert
        B: {spot}? It's close to everyone. | I could eat. Where are we thinking?
        A: {spot} at {time} then. | Sounds good, I'll grab a table.
        ?J1: see u there | omw in 10
        """,
        """
        J: i just had the best {food} of my life | {spot} is actually elite | why did nobody tell me about {spot}
        A=: Wait, where? | Ooh, I've been meaning to try it. | Wait, is it good?
        J=^: {spot} its like 10 min from campus | get the spicy one trust me | so good i went twice this week
        ?B: Adding it to the list.
        A: Okay, we're going this week. | Noted. Group dinner there soon?
        """,
        """
        A: Okay, important question: pineapple on pizza, yes or no? | Settle this: is pineapple on pizza a crime?
        J: yes and i will not be taking questions | pineapple supremacy | its sweet and salty whats not to love
        B: Strongly disagree. | This is why we can't have nice things.
        ?J1: respectfully ur wrong | the group chat is divided
        """,
        """
        A: Controversial take: {food} is overrated. | Hot take: {food} is mid.
        J: absolutely not | take that back | who hurt u
        B: I'm with {J} on this one. | Honestly, same.
        ?J1: thank u | justice
        """,
        """
        A: What's everyone's go-to comfort food? | Rainy day food, go.
        J: {food} every time | mac and cheese from the box and im not ashamed | my moms soup
        B: Grilled cheese and tomato soup. | {food}, no contest.
        ?J1: ok now im hungry | valid
        """,
        """
        A: [photo] Made {food} from scratch tonight! | [photo] Look what I cooked. | [photo] First attempt at homemade {food}.
        J: omg | that looks so good | save me some | recipe pls
        A: Thank you! It took three hours. | I'll send you the recipe. | It was honestly easier than I expected.
        ?J1: chef | ur so talented
        """,
        """
        A: Has anyone been to the new {food} place downtown? | Is {spot} still open? I heard they closed. | Is {spot} open on Mondays?
        J1=: not yet but i want to | they reopened last week i think | no idea tbh
        B: I think they're open now, I saw a post. | I went on Friday, it's really good! Get the spicy one.
        A: Thanks! | Good to know, thank you.
        """,
        """
        J: brunch {day} | i need pancakes | who is free
        A: Me! Where? | I'm in. Sunny Side Cafe? | I can do after 11.
        J^: sunny side is perfect | 11 works | ok im booking
        ?B: Save me a seat, I'll be a bit late.
        """,
        """
        A: I ate way too much {food}. I can't move. | Why did I order the large {food}? | Food coma, send help.
        J: same | this is so relatable | we have to go back | that is a valid life choice
        ?A: Worth it though.
        """,
        """
        @whatsapp
        A: Grocery run tomorrow, anyone need anything? | I'm at the store, need anything? | Going to Trader Joe's, want anything?
        J: oat milk pls | the dumplings | those chili crisp things | ill venmo u
        A: Got it. | Adding to the list. | Okay! Anything else?
        ?J1: no thats it ur the best
        """,
    ],
    "weekend": [
        """
        A: Plans for {day}? | What's everyone doing {day}? | Anyone free {day}?
        J^: nothing yet | im free after 2 | no plans just vibes | i have a shift until noon then free
        B: We could go to {activity}. | How about {activity}? The weather's supposed to be nice.
        J: ok yes | ive been wanting to do that | count me in | lets do it
        A: Great, {time} works? | Perfect, let's meet at {time}.
        ?C: I'm in too!
        """,
        """
        J: {activity} this weekend who is coming | ok but {activity} {day} | im bored entertain me
        A: I'm in! What time? | I'd love that. When? | Can't this weekend, I have my sister's birthday.
        J=^: {time} | morning so we beat the crowds | nooo ok next time
        ?B: I'll drive.
        ?A: See you there.
        """,
        """
        A: That was such a fun weekend. | Thanks for organizing, that was great. | Yesterday was perfect, we should do that more.
        J: it really was | best day | im still tired | lets do it again next month
        ?B: Agreed, same time next month?
        """,
        """
        A: It's going to rain all weekend. | Weather looks terrible for {day}. | Rain check on {activity}? Forecast looks bad.
        J: nooo | movie day then | indoor plans it is | fine {movie} at mine
        B: Movie day sounds perfect. | I'm in for a movie day.
        A: Okay, indoor plan. Who's bringing snacks? | Great, I'll bring popcorn.
        ?J1: me | i got the snacks
        """,
        """
        A: Did you all see {movie} yet? | Anyone want to see {movie} this weekend? | {movie} tickets are cheap on Tuesdays btw.
        J^: not yet | i want to | yes and i need to talk about it | so good please go
        B: I'm free {day}. | Let's do the late showing.
        A: Booking tickets for {day} at {time}. | I'll buy tickets, send me money later.
        ?J1: ok ty | ur the best
        """,
        """
        J: i need to get out of the house | cabin fever is real | entertain me
        A: Walk around the lake? | Want to come to {activity} with me? | Come over, I'm baking.
        J^: omw | yes pls | ok im putting on shoes
        """,
        """
        @whatsapp
        A: Who's driving on {day}? | Can someone pick me up on {day}? | Carpool for {day}?
        J: i can drive | i have the car this weekend | i can take 3 people
        B: Amazing, can you get me at {time}? | Thank you! I'll bring gas money.
        J1: yes | ofc
        """,
    ],
    "work": [
        """
        A: How's the semester going, {J}? | {J}, how was the {class} critique? | {J}, did you finish your project?
        J=^: so stressful but im surviving | my professor said my layout was brave which means bad | almost done i think
        A=: You've got this. | Brave is a compliment! Probably. | Nice, almost there!
        ?B: When is it due?
        ?J1: friday | tomorrow at 9 | next week thank god
        """,
        """
        A: My {deadline} is tomorrow and I'm not ready. | Ugh, {deadline} this week. | Survived the {deadline}!
        J=: u got this | sending good vibes | ok but proud of u
        A=: Thank you, I needed that. | Thanks, I'll report back. | Thanks!
        ?B=: Good luck! | Good luck! We'll celebrate after. | Congrats! We'll celebrate.
        """,
        """
        J: i have a {class} exam tomorrow and i know nothing | why did i take {class} | {class} is ruining my life
        A: You always say that and then you ace it. | Want to study together? | What's it on?
        J=^: ok thats true | yes please library at 4 | color and composition and my tears
        A=: Ha, you'll be fine. | Library at 4 it is. | Want to study together?
        """,
        """
        A: Work was so long today. | My manager scheduled a meeting at 5 on a Friday. | I got the promotion!!
        J=: nooo | the audacity | ok but thats huge congrats we have to celebrate
        B=: That sounds exhausting. | That's awful, sorry. | Congrats! Drinks on you then!
        ?A: Thanks everyone.
        """,
        """
        J: closing shift at the cafe again | someone come visit me at work | i made 200 lattes today
        A: I'll stop by after class! | Save me a croissant. | That's a lot of lattes.
        J=^: yay free cookie if u come | i will hide one for u | my arms hurt so bad
        """,
        """
        A: Does anyone know how to make a Gantt chart in Google Sheets? | Does anyone have a printer I can use? | Can someone proofread my cover letter?
        J=^: yes i can help | i have a printer at home | send it to me i can do it tonight
        A: You're a lifesaver. | Thank you so much! | Sending it now.
        ?J1: anytime | ofc
        """,
        """
        A: I have a job interview on Monday. Any tips? | Should I ask for a raise? | Thinking of quitting my job. Thoughts?
        J: go for it | be yourself but like the professional version | u deserve it | trust your gut
        B=: Prepare a couple of questions for them. | Definitely ask, the worst they can say is no. | Sleep on it before you decide.
        A: Good advice, thanks. | Okay, I'll try.
        """,
    ],
    "music": [
        """
        A: Has anyone listened to the new {artist} album? | {artist} announced a tour! | Is {artist} any good? Never listened.
        J=^: yes track 3 is my whole personality now | we need tickets | they are so good start with the first album
        B=: I've had it on repeat all week. | Tickets go on sale Friday. | Seconding that, the first album is the best.
        A: Let's try to get tickets together. | I'll give it a listen tonight.
        ?J: i will set 5 alarms | yes we are going | ok im making a playlist
        """,
        """
        J: whats everyone listening to rn | need new music | send me songs
        A: {artist}, nonstop. | Lots of {artist} lately. | I'll send you my playlist.
        J^: ooh ok | adding | ive never heard of them | ok downloading
        ?B: Try {artist} too.
        """,
        """
        A: Concert last night was incredible. | {artist} was so good live. | My ears are still ringing from that concert.
        J: so jealous | did they play the old songs | videos pls | i heard it was amazing
        A: They played everything. | [video] Here's a bit of it. | It was the best show I've been to.
        ?J1: crying | next time im coming
        """,
        """
        @discord
        A: !play {song} | !play {artist} | !queue {song}
        BOT=: 🎶 Now playing: **{song}** [{dur}] | 🎶 Now playing: **{song}** by {artist} [{dur}] | 🎶 Added **{song}** to the queue (position {n})
        J: ok this song | who queued this | ok but taste | skip it i dare u
        ?A: My queue, my rules.
        """,
        """
        A: What should I play at the party on {day}? | Need songs for a road trip playlist. | Karaoke song suggestions?
        J^: {song} obviously | anything {artist} | dancing queen no discussion | ill make u a playlist
        B: Good call. | Yes! And something by {artist}.
        A: Perfect, adding those. | Okay, you're in charge.
        """,
        """
        J: i learned a new song on guitar | practicing every day now | my fingers hurt so bad
        A: Play it for us next time! | That's awesome. | Which one?
        J^: maybe at the cabin | no way im too shy | {song}
        ?B: Yes, at the cabin!
        """,
    ],
    "memes": [
        """
        A: [photo] | [gif] | [photo] This is so us.
        J: LMAO | im crying | not the {pet} | this is literally us | why is this so accurate
        B: I'm dying. | Sending this to everyone I know. | Stop, this is too real.
        ?J1: 💀 | i cant breathe
        """,
        """
        J1: [photo] | [gif]
        J: this is us | look at this | i cant stop laughing
        A: Haha, this is amazing. | Where do you find these? | This is perfect.
        ?B: Too accurate.
        """,
        """
        A: https://www.reddit.com/r/aww/comments/{n}x{n}q/this_cat_judges_me/ | https://youtu.be/{n}Xk{n}bQ9zA this is the funniest video I've seen all week. | Watch this: https://www.tiktok.com/@catvids/video/7{n}3{n}
        J: LMAO | why did i watch this 6 times | the ending | sending to my mom
        ?B: Lol, amazing.
        """,
        """
        A: My {pet} just knocked my coffee onto my laptop. | My {pet} is sitting on my keyboard and won't move. | My {pet} learned to open doors and I'm scared.
        J: nooo | pics or it didnt happen | ok but thats so cute | the audacity
        A: [photo] | [photo] Evidence.
        J: stop | its so cute | i would die for them
        """,
        """
        A: Unpopular opinion: cereal is a soup. | Is a hot dog a sandwich? Settle this. | Do you put the milk in first or the cereal?
        J=: get out | no its a hot dog | cereal first what are we animals
        B=: Cereal is cold soup, I said what I said. | It's a taco, clearly. | Milk first is a crime.
        ?J1: im leaving | the group chat has fallen
        """,
        """
        A: Remember when Theo tried to parallel park for 20 minutes? | Throwback to the karaoke night. | Remember the great sushi disaster?
        J: i will never forget | LMAO | the trauma | that was the best night
        B: I still have the video. | I've blocked it from my memory.
        """,
    ],
    "misc": [
        """
        A: Good morning everyone! | Morning! Anyone else up this early? | Morning all!
        J: gm | why are u awake | its too early for this | coffee first
        ?B: Coffee first, then talking.
        """,
        """
        J: i think i just saw a celebrity at the grocery store | random question | does anyone have a phone charger i can borrow
        A=: Who?? | What's up? | Yes, I have one.
        J=^: i have no idea but they were famous | do u guys dream in color | ok thank u ill come get it
        """,
        """
        A: Quick poll: tea or coffee? | Dogs or cats? | Mountains or beach?
        J=: coffee | cats obviously | mountains
        B=: Tea, always. | Dogs, no contest. | Beach, 100 percent.
        ?J1: wrong | we cant be friends
        """,
        """
        A: Goodnight everyone. | I'm heading to bed, night! | Okay, sleeping now. Goodnight.
        J: gn | sleep well | night | dont let the bed bugs bite
        """,
        """
        @once
        A: Happy birthday {J}!! 🎂 | Happy birthday to our favourite chaos gremlin, {J}!
        J: thank u | love u guys | im so old
        B: Happy birthday! Drinks tonight? | Happy birthday! 🎉
        J: yes | drinks tonight | {spot} at {time}
        """,
        """
        A: I'm thinking about getting a tattoo. | I'm adopting a {pet}! | I dyed my hair. Don't laugh.
        J^: omg | pics | do it | we need to see
        A: [photo] | I'll send a picture later.
        J: obsessed | it looks so good | ok im jealous
        """,
        """
        @discord
        A: !roll 1d20 | !roll 1d20 for who picks the movie | !roll 2d6
        BOT: 🎲 {A} rolled **{n}** | 🎲 {A} rolled **{n}** (1d20)
        J: rigged | my turn | ok that was lucky
        ?A: Read it and weep.
        """,
        """
        @discord
        A: !remind 7pm call mom | !remind tomorrow 9am dentist | !weather
        BOT=: ⏰ Okay {A}, I'll remind you at 7pm. | ⏰ Okay {A}, I'll remind you tomorrow at 9am. | ☀️ Sunny, 21°C. High 24°C, low 12°C.
        ?J1: bot is so polite | jukebox carrying this server
        """,
        """
        @discord @phase=opening
        A: Welcome to the server, @mxrcus! | Finally, Marcus is here.
        marcus: Hi everyone! Thanks for the invite.
        J: welcome | hi marcus | finally
        """,
    ],
    "trip": [
        """
        @phase=plan
        A: We should do a trip this spring. | Cabin trip in April? I found a place at Pine Lake. | Okay, serious question: are we doing a trip this year?
        J^: yes | ok but a cabin with a hot tub | im so in | i need a vacation so bad
        B: I'm in. When? | Pine Lake is beautiful. | Yes! Let's make it happen.
        A: Third weekend of April? | How about April 19th to 21st?
        J: works for me | i can take off work | yes
        """,
        """
        @phase=plan
        A: Cabin options: https://www.airbnb.com/rooms/{n}4{n}88 or https://www.airbnb.com/rooms/{n}9{n}12 | I made a spreadsheet of cabins for the trip, check it out.
        J: the first one | ok the one with the hot tub | the one with the dock | the one with the fireplace
        B: That one for me too. | The other one is cheaper, though.
        ?A: Okay, let's vote by Friday.
        """,
        """
        @phase=plan
        J: ok but who is bringing the speaker | i am making a trip playlist | important: hot tub or no hot tub
        A=: I have a good speaker. | Send me the playlist when it's done. | Hot tub, obviously.
        J^: perfect | noted | its going to be so good
        """,
        """
        @phase=book @once
        A*: Itinerary: // Friday 4pm: leave from mine // Friday 7pm: arrive, dinner // Saturday: hike + lake // Sunday 11am: checkout
        A: {pin}
        J: perfect | ur so organized | i love this | screenshotting
        ?B: Can we do a game night on Saturday too?
        """,
        """
        @phase=book
        A: Packing list so far: // - sleeping bags // - the speaker // - snacks (Theo's job) // - sunscreen!! | Who's bringing what?
        J: i can bring snacks | ill bring games | the blanket | i have a cooler
        B: I'll bring drinks. | I'll bring the board games.
        ?A: Great, updating the list.
        """,
        """
        @phase=book
        A: Who's driving to the cabin? I can take four people. | Carpool for the cabin: I have room for three.
        J^: me pls | shotgun | ill bring snacks for the car
        B: I'll ride with you too. | I'll take my car, then we're all set.
        ?J1: road trip playlist is ready | perfect
        """,
        """
        @phase=book
        A: Food plan for the cabin: I'll do breakfast stuff, can someone do dinner? | Who's cooking at the cabin?
        J: i can do dinner | tacos night at the cabin? | ill make my pasta
        B: Yes to tacos! | I'll do the grill on Saturday.
        ?A: Perfect, that's everything.
        """,
        """
        @phase=book
        J: ok its almost cabin time | countdown is on | i already packed
        A=: Can't wait! | Counting the days. | You packed already??
        J=: same | its going to be so good | its called being prepared
        ?B: Weather looks sunny, by the way. Bring layers for the night.
        """,
        """
        @phase=book @once
        sam: Okay, I booked the cabin! Send your share to sam.carter@example.com on PayPal, it's $84 each.
        J: yesss | sending now | omg its real
        priya: Done, thank you for organizing!
        ?theo: Sent.
        """,
        """
        @phase=book @once @whatsapp
        sam: If anyone needs to reach the cabin host, her email is host.pinelake@example.com and the office line is +1 555 0188.
        J1: saved | ok ty
        priya: Thanks!
        """,
        """
        @phase=during
        A: [photo] View from the dock! | [photo] Morning at the lake. | [video] The lake is freezing.
        J: this is so pretty | im never leaving | 10/10 | ok this is heaven
        B: Who's making breakfast? | Best trip ever.
        ?J1: not me | i made dinner yesterday
        """,
        """
        @phase=during
        J: who took my hoodie | where is everyone | hot tub in 10
        A=: Sorry, I'm wearing it. | We're at the dock. | I'm coming!
        J=^: ok i forgive u | omw | yay
        """,
        """
        @phase=after
        A: I miss the lake already. | [photo] Best trip ever. | Thanks everyone for an amazing weekend.
        J: same | lets go back in summer | post concert blues but for the lake | best weekend of the year
        B: Let's make it an annual thing. | Summer trip?
        J: yes | already looking at dates
        """,
        """
        @phase=after
        A: I have 200 photos from the trip. Uploading them to the shared album now. | Who has the photos from Saturday?
        J^: i have some | ill upload mine | pls delete the one of me falling in the lake
        B: Too late, it's my wallpaper.
        ?J1: im blocking u
        """,
    ],
    "pii": [
        """
        @whatsapp @once
        priya: New phone, same me. My number is now +1 555 0100, the old one is dead.
        J: saved | ok new number who dis
        ?sam: Saved, thanks!
        """,
        """
        @discord @once
        theo: PSA: do NOT paste your card number into a group chat. // 4111 1111 1111 1111 // (that's the Visa test number, relax)
        J: theo pls | my heart stopped | not the psa
        sam: I was about to call your bank.
        """,
        """
        @once
        sam: Everyone, my new email is sam.carter@example.com, the old one got hacked.
        J1: noted | ok ty
        """,
        """
        @discord @once
        priya: If anyone needs my landlord for the sublet, it's Mr. Diaz at +1 555 0142.
        J1: ty | saving it
        """,
    ],
}
# Follow-ups that fit anywhere in Juno's bursts on a topic (the rest come from JUNO_EXTRAS).
TOPIC_EXTRAS: dict[str, tuple[str, ...]] = {
    "games": (
        "im so washed",
        "carry me pls",
        "one more round",
        "the lag tho",
        "i need a new controller",
        "gg",
    ),
    "food": ("im starving", "i need snacks", "dessert after?", "ok now im hungry", "my stomach is growling"),
    "weekend": (
        "i need this so bad",
        "outside time",
        "ill bring snacks",
        "sunscreen this time",
        "so excited",
    ),
    "work": ("i need a nap", "send help", "coffee is my personality now", "why is adulting like this"),
    "music": ("on repeat", "adding to my playlist", "this song lives in my head", "the bridge tho"),
    "memes": ("im wheezing", "i cant breathe", "sending this to everyone", "the audacity", "screaming"),
    "misc": ("anyway", "ok bye", "love u guys", "what a day"),
    "trip": ("cabin szn", "i need a vacation", "counting down", "the hot tub is calling", "lake time"),
    "pii": ("ok", "noted"),
}

TOPIC_WEIGHTS: dict[str, dict[str, float]] = {
    "discord": {
        "games": 26,
        "music": 14,
        "memes": 16,
        "food": 10,
        "weekend": 9,
        "work": 12,
        "trip": 7,
        "misc": 6,
        "pii": 2,
    },
    "whatsapp": {
        "games": 5,
        "music": 8,
        "memes": 10,
        "food": 18,
        "weekend": 21,
        "work": 12,
        "trip": 19,
        "misc": 5,
        "pii": 3,
    },
}
# A line from a friend between two of Juno's bursts when a new thread would start with Juno again.
BRIDGES = ("Ha, true.", "Fair enough.", "Okay, noted.", "Lol.", "Good point.", "Right?", "Ha!")
OTHER_TAGS = (" 😂", " 👍", " lol", " 🙌", " :)", "!")

# ---------------------------------------------------------------------------------------------------
# Thread parsing
# ---------------------------------------------------------------------------------------------------

_STEP_RE = re.compile(r"^(\?)?([A-Za-z0-9]+)([=^*]*):\s*(.*)$")


@dataclass(frozen=True, slots=True)
class Step:
    role: str
    options: tuple[str, ...]
    optional: bool = False
    aligned: bool = False
    reply: bool = False
    pinned: bool = False


@dataclass(frozen=True, slots=True)
class Thread:
    topic: str
    steps: tuple[Step, ...]
    platforms: frozenset[str]
    phase: str | None
    once: bool
    index: int


def _parse_threads() -> list[Thread]:
    threads: list[Thread] = []
    for topic, blocks in THREADS.items():
        for block in blocks:
            platforms = frozenset(("discord", "whatsapp"))
            phase: str | None = None
            once = False
            steps: list[Step] = []
            for raw in block.strip().splitlines():
                line = raw.strip()
                if line.startswith("@"):
                    for tag in line.split():
                        if tag in ("@discord", "@whatsapp"):
                            platforms = frozenset((tag[1:],))
                        elif tag == "@once":
                            once = True
                        elif tag.startswith("@phase="):
                            phase = tag.removeprefix("@phase=")
                        else:
                            raise ValueError(f"unknown thread tag {tag!r}")
                    continue
                match = _STEP_RE.match(line)
                if match is None:
                    raise ValueError(f"bad thread line {line!r}")
                optional, role, marks, text = match.groups()
                if role not in ("A", "B", "C", "J", "J1", "BOT") and role not in PEOPLE:
                    raise ValueError(f"unknown role {role!r}")
                options = tuple(o.strip().replace(" // ", "\n") for o in text.split(" | "))
                steps.append(Step(role, options, bool(optional), "=" in marks, "^" in marks, "*" in marks))
            threads.append(Thread(topic, tuple(steps), platforms, phase, once, len(threads)))
    return threads


ALL_THREADS = _parse_threads()

# ---------------------------------------------------------------------------------------------------
# Simulation: a stream of chat events
# ---------------------------------------------------------------------------------------------------

EventKind = Literal["text", "media", "deleted", "system", "call", "pin", "join", "bot"]
MEDIA_FILES = {
    "photo": ("IMG_{n}.jpg", "image.png", "PXL_2024{n}.jpg", "Screenshot_{n}.png"),
    "video": ("VID_{n}.mp4", "clip.mov"),
    "gif": ("funny.gif", "reaction.gif"),
}


@dataclass(slots=True)
class Event:
    """One message of the simulated chat, before it is written in either export format."""

    seq: int
    time: datetime
    speaker: str  # a key of PEOPLE, or "" for a WhatsApp system line
    kind: EventKind
    text: str = ""
    reply_to: int | None = None  # seq of an earlier event (Discord replies)
    attachment: str | None = None  # file name of a media message
    edited_seconds: int | None = None
    pinned: bool = False
    pins: int | None = None  # for kind "pin": seq of the pinned event
    call_minutes: int = 0
    mentions: tuple[str, ...] = ()
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (emoji, people keys)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """How a simulated chat is shaped. `threads_per_session` and the gap set how long the chat runs."""

    platform: Literal["discord", "whatsapp"]
    n_messages: int
    seed: int
    start: datetime
    threads_per_session: tuple[int, int] = (1, 3)
    mean_session_gap_hours: float = 9.0


SAMPLE_DISCORD = SimConfig("discord", DISCORD_MESSAGES, SEED, datetime(2024, 2, 1, 19, 12, 5))
SAMPLE_WHATSAPP = SimConfig(
    "whatsapp", WHATSAPP_MESSAGES, SEED + 1, datetime(2024, 2, 8, 20, 41), mean_session_gap_hours=8.0
)


def trip_phase(day: date) -> str:
    """Where a day falls in the yearly cabin-trip cycle around TRIP_START (long exports repeat it)."""
    offset = (day - TRIP_START).days % 365
    if offset < 3:
        return "during"
    if offset < 35:
        return "after"
    if offset >= 365 - 18:
        return "book"
    return "plan"


class _Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.platform = config.platform
        self.rng = random.Random(config.seed)
        humans = DISCORD_HUMANS if self.platform == "discord" else WHATSAPP_HUMANS
        self.others = tuple(p.key for p in humans if p is not JUNO)
        self.other_weights = tuple(OTHER_WEIGHTS[k] for k in self.others)
        self.threads = [t for t in ALL_THREADS if self.platform in t.platforms]
        self.used_once: set[int] = set()
        self.seq = 0
        self.time = config.start
        self.last_speaker = ""
        self.recent_threads: deque[int] = deque(maxlen=12)

    # -- emitting ----------------------------------------------------------------------------------

    def _event(self, speaker: str, kind: EventKind, text: str = "", **fields: object) -> Event:
        event = Event(self.seq, self.time, speaker, kind, text, **fields)  # type: ignore[arg-type]
        self.seq += 1
        self.last_speaker = speaker
        return event

    def _advance(self, speaker: str) -> None:
        rng = self.rng
        if speaker == self.last_speaker:
            seconds = rng.randint(3, 40)
        elif rng.random() < 0.08:
            seconds = rng.randint(240, 1500)  # a slower reply, still inside the session
        else:
            seconds = rng.randint(15, 240)
        self.time += timedelta(seconds=seconds, milliseconds=rng.randint(0, 999))

    # -- a chat ------------------------------------------------------------------------------------

    def events(self) -> Iterator[Event]:
        n = self.config.n_messages
        produced = 0
        for event in self._opening():
            if produced >= n:
                return
            yield event
            produced += 1
        while True:
            for event in self._session():
                if produced >= n:
                    return
                yield event
                produced += 1
            self._next_session_start()

    def _opening(self) -> Iterator[Event]:
        if self.platform == "whatsapp":
            yield self._event(
                "",
                "system",
                "Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
                "WhatsApp, can read or listen to them. Tap to learn more.",
            )
            yield self._event("", "system", f'{SAM.whatsapp_name} created group "{WHATSAPP_GROUP}"')
            yield self._event("", "system", f"{SAM.whatsapp_name} added you")
            for person in (PRIYA, THEO, MARCUS, DANI):
                yield self._event("", "system", f"{SAM.whatsapp_name} added {person.whatsapp_name}")
        else:
            yield self._event("marcus", "join", "Joined the server.")
            welcome = next(t for t in self.threads if t.phase == "opening")
            yield from self._run_thread(welcome)
        self.time += timedelta(minutes=self.rng.randint(1, 20))
        self.last_speaker = ""

    def _next_session_start(self) -> None:
        rng = self.rng
        gap = timedelta(minutes=45) + timedelta(hours=rng.expovariate(1 / self.config.mean_session_gap_hours))
        start = self.time + gap
        if 2 <= start.hour < 8:  # nobody chats at 4 am: move to the morning
            start = start.replace(hour=rng.randint(8, 10), minute=rng.randint(0, 59))
        self.time = start.replace(second=rng.randint(0, 59))
        self.last_speaker = ""

    def _session(self) -> Iterator[Event]:
        low, high = self.config.threads_per_session
        for _ in range(self.rng.randint(low, high)):
            yield from self._run_thread(self._pick_thread())
        if self.platform == "whatsapp" and self.rng.random() < 0.015:
            self._advance("")
            yield self._event("", "system", "Missed group voice call")

    def _pick_thread(self) -> Thread:
        rng = self.rng
        weights = TOPIC_WEIGHTS[self.platform]
        phase = trip_phase(self.time.date())
        topic_weights = [weights[t] * (3 if t == "trip" and phase == "during" else 1) for t in weights]
        while True:
            topic = rng.choices(tuple(weights), weights=topic_weights)[0]
            pool = [
                t
                for t in self.threads
                if t.topic == topic
                and (t.phase is None or t.phase == phase)
                and t.index not in self.used_once
            ]
            fresh = [t for t in pool if t.index not in self.recent_threads]
            if not fresh:  # a small pool (one trip phase): allow a repeat, but not twice in a row
                fresh = [t for t in pool if not self.recent_threads or t.index != self.recent_threads[-1]]
            pool = fresh
            if not pool:
                continue
            once = [t for t in pool if t.once]
            thread = once[0] if once and rng.random() < 0.5 else rng.choice(pool)
            if thread.once:
                self.used_once.add(thread.index)
            self.recent_threads.append(thread.index)
            return thread

    def _run_thread(self, thread: Thread) -> Iterator[Event]:
        rng = self.rng
        friends = rng.choices(self.others, weights=self.other_weights, k=12)
        cast: list[str] = []
        for key in friends:
            if key not in cast:
                cast.append(key)
        while len(cast) < 3:
            cast.extend(k for k in self.others if k not in cast)
        roles = {"A": cast[0], "B": cast[1], "C": cast[2]}
        song, song_artist = rng.choice(SONGS)
        slots = {name: rng.choice(values) for name, values in SLOTS.items()}
        slots["song"] = song
        if any("{song}" in option for s in thread.steps for option in s.options):
            slots["artist"] = song_artist  # "!play {artist}" then "Now playing: {song}" must agree
        first_seq: int | None = None
        pinned_seq: int | None = None
        previous_role = ""
        previous_choice = (-1, -1)  # (option index, option count) of the last line that ran
        for index, step in enumerate(thread.steps):
            if step.optional and rng.random() < 0.5:
                continue
            continues_juno = previous_role in ("J", "J1")  # scripted on purpose: media, then words
            previous_role = step.role
            speaker = (
                "juno"
                if step.role in ("J", "J1")
                else "jukebox"
                if step.role == "BOT"
                else roles.get(step.role, step.role)
            )
            if speaker == "juno" and self.last_speaker == "juno" and not continues_juno:
                if index > 0:
                    continue  # an optional line in between was skipped: keep Juno's bursts apart
                self._advance("bridge")
                bridge_by = roles["A"]
                yield self._event(bridge_by, "text", rng.choice(BRIDGES))
            choice = rng.randrange(len(step.options))
            if step.aligned and previous_choice[1] == len(step.options):
                choice = previous_choice[0]
            previous_choice = (choice, len(step.options))
            option = step.options[choice]
            if option == "{call}":
                if self.platform != "discord":
                    continue
                self._advance(speaker)
                call = self._event(speaker, "call", "", call_minutes=rng.randint(12, 190))
                self.time += timedelta(minutes=call.call_minutes)
                yield call
                continue
            if option == "{pin}":
                if self.platform != "discord" or pinned_seq is None:
                    continue
                self._advance(speaker)
                yield self._event(speaker, "pin", "Pinned a message.", pins=pinned_seq)
                continue
            text = self._fill(option, slots, roles)
            reply_to = first_seq if step.reply and first_seq is not None and rng.random() < 0.5 else None
            if speaker == "juno":
                length = (
                    1 if step.role == "J1" else rng.choices(tuple(BURST_WEIGHTS), BURST_WEIGHTS.values())[0]
                )
                for i, message in enumerate(self._juno_burst(text, length, thread.topic, step)):
                    self._advance("juno")
                    event = self._message("juno", message, reply_to if i == 0 else None)
                    first_seq = event.seq if first_seq is None else first_seq
                    yield event
                continue
            self._advance(speaker)
            if speaker == "jukebox":
                event = self._event("jukebox", "bot", text)
            else:
                event = self._message(speaker, self._other_style(text, speaker), reply_to, step.pinned)
            if step.pinned:
                pinned_seq = event.seq
            first_seq = event.seq if first_seq is None else first_seq
            yield event

    def _fill(self, template: str, slots: dict[str, str], roles: dict[str, str]) -> str:
        def name(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "J":
                if self.platform == "discord" and self.rng.random() < 0.35:
                    return "@Juno"
                return "Juno"
            if key in roles:
                return PEOPLE[roles[key]].first_name
            return slots[key]

        return re.sub(r"\{(\w+)\}", name, template)

    def _juno_burst(self, first: str, length: int, topic: str, step: Step) -> list[str]:
        rng = self.rng
        lines = [first]
        while len(lines) < length:
            extra = rng.choice(TOPIC_EXTRAS[topic] if rng.random() < 0.4 else JUNO_EXTRAS)
            if extra not in lines:
                lines.append(extra)
        return [line if line.startswith("[") else juno_style(line, rng) for line in lines]

    def _other_style(self, text: str, speaker: str) -> str:
        rng = self.rng
        if text.startswith(("[", "!", "http")) or "\n" in text:
            return text
        roll = rng.random()
        if roll < 0.06 and text.endswith("."):
            return text[:-1] + rng.choice(OTHER_TAGS)
        if speaker == "priya" and roll < 0.12:
            return "Haha " + text[0].lower() + text[1:] if text[0].isupper() and text[1:2].islower() else text
        return text

    def _message(self, speaker: str, text: str, reply_to: int | None, pinned: bool = False) -> Event:
        rng = self.rng
        media = re.match(r"^\[(photo|video|gif)\]\s*(.*)$", text, re.S)
        if media:
            kind, caption = media.groups()
            attachment = rng.choice(MEDIA_FILES[kind]).replace("{n}", str(rng.randint(1000, 9999)))
            return self._event(speaker, "media", caption, attachment=attachment, reply_to=reply_to)
        if speaker != "juno":
            if self.platform == "whatsapp" and rng.random() < 0.006:
                return self._event(speaker, "deleted", "This message was deleted")
            edited = rng.randint(20, 400) if rng.random() < 0.012 else None
        else:
            edited = None
        mentions = ("juno",) if "@Juno" in text else ("marcus",) if "@mxrcus" in text else ()
        reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if self.platform == "discord" and rng.random() < 0.06:
            emoji = rng.choice(("😂", "💀", "❤️", "👍", "🔥"))
            users = tuple(sorted({rng.choice((*self.others, "juno")) for _ in range(3)} - {speaker}))
            if users:
                reactions = ((emoji, users),)
        return self._event(
            speaker,
            "text",
            text,
            reply_to=reply_to,
            edited_seconds=edited,
            pinned=pinned,
            mentions=mentions,
            reactions=reactions,
        )


def simulate(config: SimConfig) -> Iterator[Event]:
    """The chat as a stream of events, exactly `config.n_messages` long, deterministic for a config."""
    return _Simulator(config).events()


# ---------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------

DISCORD_EPOCH_MS = 1420070400000
_EMOJI_CODES = {"😂": ("joy", "1f602"), "💀": ("skull", "1f480"), "❤️": ("heart", "2764"), "👍": ("thumbsup", "1f44d"), "🔥": ("fire", "1f525")}  # fmt: skip


def _iso(moment: datetime) -> str:
    """DiscordChatExporter-style timestamp (exported with --utc): milliseconds and an explicit offset."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+00:00"


def _snowflake(moment: datetime, seq: int, worker: int = 1) -> str:
    ms = int((moment - datetime(1970, 1, 1)).total_seconds() * 1000)
    return str(((ms - DISCORD_EPOCH_MS) << 22) | (worker << 17) | (seq % 4096))


def _avatar(person: Person) -> str:
    return f"https://cdn.discordapp.com/avatars/{person.discord_id}/{person.avatar_hash}.png?size=512"


def _user(person: Person) -> dict[str, object]:
    return {
        "id": person.discord_id,
        "name": person.discord_name,
        "discriminator": person.discriminator,
        "nickname": person.nickname,
        "isBot": person.is_bot,
        "avatarUrl": _avatar(person),
    }


def _author(person: Person) -> dict[str, object]:
    return {
        "id": person.discord_id,
        "name": person.discord_name,
        "discriminator": person.discriminator,
        "nickname": person.nickname,
        "color": person.color,
        "isBot": person.is_bot,
        "roles": [],
        "avatarUrl": _avatar(person),
    }


@dataclass
class _DiscordIds:
    by_seq: dict[int, str] = field(default_factory=dict)

    def remember(self, seq: int, message_id: str) -> None:
        self.by_seq[seq] = message_id
        if len(self.by_seq) > 4096:  # replies and pins point back a few messages only
            for old in list(self.by_seq)[:2048]:
                del self.by_seq[old]


def discord_message(event: Event, ids: _DiscordIds) -> dict[str, object]:
    message_id = _snowflake(event.time, event.seq)
    ids.remember(event.seq, message_id)
    person = PEOPLE[event.speaker]
    kind = {"call": "Call", "pin": "ChannelPinnedMessage", "join": "GuildMemberJoin"}.get(
        event.kind, "Default"
    )
    content = event.text
    if event.kind == "call":
        content = f"Started a call that lasted {event.call_minutes} minutes."
    reference_to = event.pins if event.kind == "pin" else event.reply_to
    if event.reply_to is not None and event.kind in ("text", "media"):
        kind = "Reply"
    attachments = []
    if event.attachment:
        attachment_id = _snowflake(event.time, event.seq, worker=2)
        attachments.append(
            {
                "id": attachment_id,
                "url": f"https://cdn.discordapp.com/attachments/{CHANNEL['id']}/{attachment_id}/{event.attachment}",
                "fileName": event.attachment,
                "fileSizeBytes": 48_000 + (event.seq * 7919) % 3_900_000,
            }
        )
    message: dict[str, object] = {
        "id": message_id,
        "type": kind,
        "timestamp": _iso(event.time),
        "timestampEdited": _iso(event.time + timedelta(seconds=event.edited_seconds))
        if event.edited_seconds
        else None,
        "callEndedTimestamp": _iso(event.time + timedelta(minutes=event.call_minutes))
        if event.kind == "call"
        else None,
        "isPinned": event.pinned,
        "content": content,
        "author": _author(person),
        "attachments": attachments,
        "embeds": [],
        "stickers": [],
        "reactions": [
            {
                "emoji": {
                    "id": "",
                    "name": emoji,
                    "code": _EMOJI_CODES[emoji][0],
                    "isAnimated": False,
                    "imageUrl": f"https://cdn.jsdelivr.net/gh/twitter/twemoji@latest/assets/svg/{_EMOJI_CODES[emoji][1]}.svg",
                },
                "count": len(users),
                "users": [_user(PEOPLE[u]) for u in users],
            }
            for emoji, users in event.reactions
        ],
        "mentions": [_user(PEOPLE[m]) for m in event.mentions],
        "inlineEmojis": [],
    }
    if reference_to is not None and reference_to in ids.by_seq:
        message["reference"] = {
            "type": "Default",
            "messageId": ids.by_seq[reference_to],
            "channelId": CHANNEL["id"],
            "guildId": GUILD["id"],
        }
    return message


def write_discord(config: SimConfig, out: TextIO) -> int:
    """Stream a DiscordChatExporter JSON export (indented like the real tool) to `out`; returns the count."""
    head = {
        "guild": GUILD,
        "channel": CHANNEL,
        "dateRange": {"after": None, "before": None},
        "exportedAt": "2024-06-02T10:15:42.137+00:00",
        "messages": [],
        "messageCount": config.n_messages,
    }
    before, after = json.dumps(head, indent=2, ensure_ascii=False).split('"messages": []')
    out.write(before + '"messages": [')
    ids = _DiscordIds()
    count = 0
    for event in simulate(config):
        text = json.dumps(discord_message(event, ids), indent=2, ensure_ascii=False)
        out.write(("\n    " if count == 0 else ",\n    ") + text.replace("\n", "\n    "))
        count += 1
    out.write("\n  ]" + after + "\n")
    return count


def whatsapp_line(event: Event) -> str:
    stamp = event.time.strftime("%d/%m/%Y, %H:%M")
    if event.kind == "system":
        return f"{stamp} - {event.text}"
    name = PEOPLE[event.speaker].whatsapp_name
    if event.kind == "media":
        text = "<Media omitted>"
    else:
        text = event.text
        if event.edited_seconds:
            text += " <This message was edited>"
    return f"{stamp} - {name}: {text}"


def write_whatsapp(config: SimConfig, out: TextIO) -> int:
    """Stream a WhatsApp Android "Export chat" text file to `out`; returns the number of messages."""
    count = 0
    for event in simulate(config):
        out.write(whatsapp_line(event) + "\n")
        count += 1
    return count


def write_samples(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    discord_path = folder / DISCORD_FILE
    whatsapp_path = folder / WHATSAPP_FILE
    with discord_path.open("w", encoding="utf-8", newline="\n") as out:
        write_discord(SAMPLE_DISCORD, out)
    with whatsapp_path.open("w", encoding="utf-8", newline="\n") as out:
        write_whatsapp(SAMPLE_WHATSAPP, out)
    return discord_path, whatsapp_path


# ---------------------------------------------------------------------------------------------------
# Style statistics of the simulated chats (the tests measure the written files independently)
# ---------------------------------------------------------------------------------------------------

SESSION_GAP = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class StyleStats:
    messages: int
    lowercase: float
    final_period: float
    signature_emoji: float
    slang: float
    stretched: float
    lmao: float
    haha: float
    mean_burst: float
    mean_chars: float


def style_stats(events: list[Event], juno: bool) -> StyleStats:
    """Markers over text messages (no media, deleted, bot or system lines) of Juno or of everyone else.

    A burst is a run of one author's consecutive text messages, broken by any other message or a gap
    of 30 minutes or more; `mean_burst` is averaged over that side's bursts.
    """
    texts: list[str] = []
    bursts: list[int] = []
    run_author, run_length, previous_time = "", 0, None
    for event in events:
        is_text = event.kind == "text" and event.speaker != "jukebox"
        gap = previous_time is not None and event.time - previous_time >= SESSION_GAP
        previous_time = event.time
        if is_text and event.speaker == run_author and not gap:
            run_length += 1
        else:
            if run_length and (run_author == "juno") == juno:
                bursts.append(run_length)
            run_author, run_length = (event.speaker, 1) if is_text else ("", 0)
        if is_text and (event.speaker == "juno") == juno:
            texts.append(event.text)
    if run_length and (run_author == "juno") == juno:
        bursts.append(run_length)

    def rate(predicate: object) -> float:
        return sum(1 for t in texts if predicate(t)) / len(texts)  # type: ignore[operator]

    return StyleStats(
        messages=len(texts),
        lowercase=rate(lambda t: t.replace("LMAO", "") == t.replace("LMAO", "").lower()),
        final_period=rate(lambda t: t.rstrip().endswith(".")),
        signature_emoji=rate(lambda t: any(e in t for e in SIGNATURE_EMOJI)),
        slang=rate(lambda t: SLANG_RE.search(t.lower()) is not None),
        stretched=rate(lambda t: STRETCHED_RE.search(URL_RE.sub("", t.lower())) is not None),
        lmao=rate(lambda t: "LMAO" in t),
        haha=rate(lambda t: "haha" in t.lower()),
        mean_burst=sum(bursts) / len(bursts),
        mean_chars=sum(len(t) for t in texts) / len(texts),
    )


def stats_table() -> str:
    discord = list(simulate(SAMPLE_DISCORD))
    whatsapp = list(simulate(SAMPLE_WHATSAPP))
    columns = {
        "Juno, Discord": style_stats(discord, juno=True),
        "Juno, WhatsApp": style_stats(whatsapp, juno=True),
        "Others, Discord": style_stats(discord, juno=False),
        "Others, WhatsApp": style_stats(whatsapp, juno=False),
    }
    rows = [
        ("text messages", "messages", "{:.0f}"),
        ("all lowercase (apart from LMAO)", "lowercase", "{:.1%}"),
        ("ends with a period", "final_period", "{:.1%}"),
        ("signature emoji 💀 ✨ 🫠", "signature_emoji", "{:.1%}"),
        ("slang (fr, ngl, lowkey, bestie, ok but, deadass)", "slang", "{:.1%}"),
        ("stretched word (3+ same letters)", "stretched", "{:.1%}"),
        ('"LMAO"', "lmao", "{:.1%}"),
        ('"haha"', "haha", "{:.1%}"),
        ("mean burst length (messages)", "mean_burst", "{:.2f}"),
        ("mean characters per message", "mean_chars", "{:.1f}"),
    ]
    lines = ["| marker | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, attr, fmt in rows:
        cells = [fmt.format(getattr(stats, attr)) for stats in columns.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--stats", action="store_true", help="print the style-marker table and exit")
    args = parser.parse_args(argv)
    if args.stats:
        print(stats_table())
        return
    for path in write_samples(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

"""The phrase table (sources/phrases.py): every row, put in a realistic line of its platform's export, gets
the row's kind and subkind from that platform's parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinbot.data.records import SUBKINDS, Message
from twinbot.data.sources import ParseOptions, messenger, whatsapp
from twinbot.data.sources.phrases import (
    META_MATCHER,
    META_NOTICES,
    WHATSAPP_BODIES,
    WHATSAPP_BODY_MATCHER,
    WHATSAPP_NOTICE_MATCHER,
    WHATSAPP_NOTICES,
    Phrase,
    match_pieces,
    template_pieces,
)

REQUIRED_LANGUAGES = {"en", "es", "pt", "de", "fr", "it", "nl", "ru", "tr", "pl", "id"}


def _fill(template: str, actor: str = "Ann") -> str:
    return template.replace("{actor}", actor).replace("{name}", " Carl")


def _body(row: Phrase) -> str:
    """A message body as the app writes it, built from the row."""
    if row.rule == "exact":
        return row.text
    if row.rule == "suffix":
        return ("report.pdf • 3 pages " if "omi" in row.text or "ocult" in row.text or "wegge" in row.text
                else "IMG-20200312-WA0001.jpg ") + row.text  # fmt: skip
    if row.subkind == "attachment":
        return f"{row.text} 00000012-PHOTO-2020-03-12-14-05-23.jpg>"
    if row.subkind == "location":
        return row.text + "s://maps.google.com/?q=52.1,4.3"
    if row.subkind == "poll":
        return row.text + "\nWhere do we eat?\nOPTION: pizza (2 votes)"
    return row.text + ", tap to learn more"


def _whatsapp(tmp_path: Path, line: str) -> Message:
    path = tmp_path / "WhatsApp Chat with Alex.txt"
    path.write_text(f"12/03/2020, 14:04 - Alex: hello\n12/03/2020, 14:05 - {line}\n", encoding="utf-8")
    first, second = whatsapp.parse(path, ParseOptions())
    assert (first.kind, first.subkind, first.text) == ("text", None, "hello")
    return second


@pytest.mark.parametrize("row", WHATSAPP_BODIES, ids=lambda row: f"{row.language}:{row.text}")
def test_whatsapp_body_rows(tmp_path: Path, row: Phrase) -> None:
    message = _whatsapp(tmp_path, f"Sam: {_body(row)}")
    assert (message.kind, message.subkind) == (row.kind, row.subkind)
    if row.kind != "system":
        assert message.text == ""  # a placeholder is never training text


@pytest.mark.parametrize("row", WHATSAPP_NOTICES, ids=lambda row: f"{row.language}:{row.text}")
def test_whatsapp_notice_rows(tmp_path: Path, row: Phrase) -> None:
    message = _whatsapp(tmp_path, _fill(row.text, "Alex"))
    assert (message.kind, message.subkind, message.author) == ("system", row.subkind, "")


def test_whatsapp_ios_notice_and_unknown_notice(tmp_path: Path) -> None:
    path = tmp_path / "_chat.txt"
    path.write_text(
        "[12/03/2020, 14:05:00] Trip: \u200eAlex added Sam\n[12/03/2020, 14:06:00] Alex did something new\n",
        encoding="utf-8",
    )
    ios, unknown = whatsapp.parse(path, ParseOptions())
    assert (ios.kind, ios.subkind, ios.author) == ("system", "member_join", "")
    assert (unknown.kind, unknown.subkind) == ("system", "other")


def test_person_text_that_mentions_a_phrase_stays_text(tmp_path: Path) -> None:
    for body in (
        "I saw <Media omitted> lol",
        "I missed voice call practice",
        "poll: who comes",
        "null and void",
    ):
        message = _whatsapp(tmp_path, f"Sam: {body}")
        assert (message.kind, message.subkind) == ("text", None), body


# A poll as the app writes it, in the row's language: the header in capitals on its own line (after U+200E on
# iOS), the question, then each option with its votes. test_whatsapp_body_rows checks every poll row with
# English options; a new non-English poll row gets its own wording here, with a person's text that starts
# like the header but is no poll.
LOCALIZED_POLLS = {  # row text -> (the poll's body, a person's text)
    "ANKET:": (
        "\u200eANKET:\nCuma akşamı nerede buluşalım?\n\u200eSEÇENEK: Kadıköy (2 oy)\n\u200eSEÇENEK: Beşiktaş (1 oy)",
        "Anket: cuma mı cumartesi mi?",
    ),
}


@pytest.mark.parametrize(("text", "bodies"), LOCALIZED_POLLS.items(), ids=list(LOCALIZED_POLLS))
def test_whatsapp_localized_poll_lines(tmp_path: Path, text: str, bodies: tuple[str, str]) -> None:
    row = _row(WHATSAPP_BODIES, text)
    poll, person = bodies
    message = _whatsapp(tmp_path, f"Burak Demir: {poll}")
    assert (message.kind, message.subkind, message.text) == (row.kind, row.subkind, "")
    message = _whatsapp(tmp_path, f"Burak Demir: {person}")
    assert (message.kind, message.subkind, message.text) == ("text", None, person)


@pytest.mark.parametrize("row", META_NOTICES, ids=lambda row: f"{row.language}:{row.text}")
def test_meta_rows(tmp_path: Path, row: Phrase) -> None:
    data = {
        "participants": [{"name": "Ann Lee"}, {"name": "Bob"}],
        "messages": [
            {"sender_name": "Ann Lee", "timestamp_ms": 1_600_000_000_000, "content": _fill(row.text)}
        ],
    }
    thread = tmp_path / "inbox" / "ann_1"
    thread.mkdir(parents=True)
    (thread / "message_1.json").write_text(json.dumps(data), encoding="utf-8")
    [message] = messenger.parse(thread, ParseOptions())
    assert (message.kind, message.subkind) == (row.kind, row.subkind)


def test_table_covers_the_languages_and_uses_known_subkinds() -> None:
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "placeholder"} >= REQUIRED_LANGUAGES
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "attachment"} >= REQUIRED_LANGUAGES
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "deleted"} >= REQUIRED_LANGUAGES
    assert {row.language for row in WHATSAPP_BODIES if row.subkind == "call"} >= REQUIRED_LANGUAGES
    assert {row.subkind for row in (*WHATSAPP_BODIES, *WHATSAPP_NOTICES, *META_NOTICES)} <= set(SUBKINDS)
    assert all(row.source for row in (*WHATSAPP_BODIES, *WHATSAPP_NOTICES, *META_NOTICES))


@pytest.mark.parametrize(
    ("template", "text", "values"),
    [
        ("{name} left", "ann left", ["ann"]),
        ("{name} left", " left", None),
        ("{name} added {name}", "ann added bob", ["ann", "bob"]),
        ("{name} added {name}", "ann added", None),
        ("You were added", "you were added", []),
    ],
)
def test_match_pieces(template: str, text: str, values: list[str] | None) -> None:
    assert match_pieces(template_pieces(template), text) == values


def test_match_pieces_is_linear() -> None:
    pieces = template_pieces("{name} reacted {name} to your message")
    text = "a reacted " * 50_000
    assert match_pieces(pieces, text) is None


# --- every non-English notice row, in a realistic line ----------------------------------------------------
# What the app writes for the row (names made up), keyed by the row's text. The row itself must match the
# line (not another row that happens to fit), and the parser must give the line the row's subkind. English
# rows are exercised by the generic tests above and by the corpus; a new non-English row needs its line here.

WHATSAPP_EXAMPLES: dict[str, str] = {  # the system line after "date, time - "
    # de
    "Nachrichten und Anrufe sind Ende-zu-Ende": "Nachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt. "
    "Niemand außerhalb dieses Chats kann sie lesen oder anhören, nicht einmal WhatsApp. Tippe, um mehr zu erfahren.",
    "Nachrichten an diese Gruppe sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt": "Nachrichten an diese "
    "Gruppe sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt. Tippe für mehr Infos.",
    "Nachrichten, die du in diesem Chat sendest, sowie Anrufe, sind jetzt mit Ende-zu-Ende": "Nachrichten, die du "
    "in diesem Chat sendest, sowie Anrufe, sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt. Tippe für mehr Infos.",
    "{name} hat {name} hinzugefügt": "Jonas Weber hat Lea Schmidt hinzugefügt.",
    "{name} ist dieser Gruppe mit dem Einladungslink beigetreten": "Mehmet Yılmaz ist dieser Gruppe mit dem "
    "Einladungslink beigetreten.",
    "{name} hat die Gruppe verlassen": "Mehmet Yılmaz hat die Gruppe verlassen.",
    "{name} hat {name} entfernt": "Jonas Weber hat Mehmet Yılmaz entfernt.",
    "{name} hat den Betreff {name} geändert": "Jonas Weber hat den Betreff von „Skatabend 🃏“ zu „Skat & Bier 🍺“ "
    "geändert.",
    "{name} hat die Gruppenbeschreibung geändert": "Lea Schmidt hat die Gruppenbeschreibung geändert.",
    "{name} hat das Gruppenbild geändert": "Lea Schmidt hat das Gruppenbild geändert.",
    "{name} hat das Gruppenbild gelöscht": "Lea Schmidt hat das Gruppenbild gelöscht.",
    "{name} hat die Gruppe {name} erstellt": "Jonas Weber hat die Gruppe „Skatabend 🃏“ erstellt.",
    "{name} hat in den Gruppen-Einstellungen festgelegt{name}": "Jonas Weber hat in den Gruppen-Einstellungen "
    "festgelegt, dass nur Admins die Gruppeninfo bearbeiten können.",
    "Die Sicherheitsnummer von {name} hat sich geändert{name}": "Die Sicherheitsnummer von Lea Schmidt hat sich "
    "geändert. Tippe für mehr Infos.",
    # es
    "Los mensajes y las llamadas están cifrados": "Los mensajes y las llamadas están cifrados de extremo a extremo. "
    "Nadie fuera de este chat, ni siquiera WhatsApp, puede leerlos ni escucharlos.",
    "Los mensajes y llamadas están cifrados": "Los mensajes y llamadas están cifrados de extremo a extremo. Toca "
    "para obtener más información.",
    "{name} te añadió": "Lucía Fernández te añadió",
    "Añadiste a {name}": "Añadiste a Diego Martín",
    "{name} añadió a {name}": "Lucía Fernández añadió a Diego Martín",
    "Te uniste usando el enlace de invitación de este grupo": "Te uniste usando el enlace de invitación de este grupo",
    "{name} se unió usando el enlace de invitación de este grupo": "Carmen Ruiz se unió usando el enlace de "
    "invitación de este grupo",
    "Saliste del grupo": "Saliste del grupo",
    "{name} salió del grupo": "Carmen Ruiz salió del grupo",
    "{name} te eliminó": "Lucía Fernández te eliminó",
    "Eliminaste a {name}": "Eliminaste a Carmen Ruiz",
    "{name} eliminó a {name}": "Lucía Fernández eliminó a Carmen Ruiz",
    "{name} cambió el asunto de {name} a {name}": 'Lucía Fernández cambió el asunto de "Cumple de Sara 🎂" a '
    '"Fotos del cumple 📸"',
    "Cambiaste el asunto de {name} a {name}": 'Cambiaste el asunto de "Cumple de Sara 🎂" a "Fotos del cumple 📸"',
    "{name} cambió el nombre del grupo a {name}": "Lucía Fernández cambió el nombre del grupo a “Fotos del cumple”",
    "{name} cambió el ícono de este grupo": "Diego Martín cambió el ícono de este grupo",
    "Cambiaste el ícono de este grupo": "Cambiaste el ícono de este grupo",
    "{name} cambió la foto del grupo": "Diego Martín cambió la foto del grupo",
    "{name} creó el grupo {name}": 'Lucía Fernández creó el grupo "Cumple de Sara 🎂"',
    "Creaste el grupo {name}": 'Creaste el grupo "Cumple de Sara 🎂"',
    "{name} creó este grupo": "Lucía Fernández creó este grupo",
    "Creaste este grupo": "Creaste este grupo",
    # fr, it, nl, ru, tr, pl, id encryption notices
    "Les messages et les appels sont chiffrés": "Les messages et les appels sont chiffrés de bout en bout. Aucun "
    "tiers, pas même WhatsApp, ne peut les lire ou les écouter. Appuyez pour en savoir plus.",
    "I messaggi e le chiamate sono crittografati": "I messaggi e le chiamate sono crittografati end-to-end. Nessuno "
    "al di fuori di questa chat, nemmeno WhatsApp, può leggerli o ascoltarli.",
    "Berichten en oproepen worden end-to-end": "Berichten en oproepen worden end-to-end versleuteld. Niemand buiten "
    "deze chat, zelfs WhatsApp niet, kan ze lezen of beluisteren. Tik voor meer info.",
    "Сообщения и звонки защищены": "Сообщения и звонки защищены сквозным шифрованием. Никто за пределами этого "
    "чата, даже WhatsApp, не может их прочитать или прослушать.",
    "Mesajlar ve aramalar uçtan uca": "Mesajlar ve aramalar uçtan uca şifrelidir. WhatsApp dahil olmak üzere bu "
    "sohbetin dışında bulunan hiç kimse onları okuyamaz ve dinleyemez.",
    "Wiadomości i połączenia są szyfrowane": "Wiadomości i połączenia są szyfrowane metodą end-to-end. Nikt spoza "
    "tego czatu, nawet WhatsApp, nie może ich odczytać ani odsłuchać.",
    "Pesan dan panggilan terenkripsi": "Pesan dan panggilan terenkripsi secara end-to-end. Tidak seorang pun di "
    "luar chat ini, termasuk WhatsApp, yang dapat membaca atau mendengarkannya.",
    # pt
    "As mensagens e as chamadas são protegidas": "As mensagens e as chamadas são protegidas com a criptografia de "
    "ponta a ponta e ficam somente entre você e os participantes desta conversa.",
    "As mensagens e chamadas são protegidas": "As mensagens e chamadas são protegidas com a criptografia de ponta a "
    "ponta. Toque para saber mais.",
    "{name} adicionou {name}": "Rafael Costa adicionou Bruno Lima",
    "{name} entrou usando o link de convite deste grupo": "Thiago Alves entrou usando o link de convite deste grupo",
    "{name} removeu {name}": "Rafael Costa removeu Thiago Alves",
    "{name} saiu": "Thiago Alves saiu",
    "{name} mudou o assunto de {name} para {name}": 'Rafael Costa mudou o assunto de "Futebol de quinta ⚽" para '
    '"Futebol de sexta ⚽"',
    "{name} mudou a descrição do grupo": "Bruno Lima mudou a descrição do grupo",
    "{name} mudou a imagem do grupo": "Bruno Lima mudou a imagem do grupo",
    "{name} criou o grupo {name}": 'Rafael Costa criou o grupo "Futebol de quinta ⚽"',
    # nl
    "{name} heeft {name} toegevoegd": "Sanne de Vries heeft Daan Jansen toegevoegd",
    "{name} hebt {name} toegevoegd": "Je hebt Fleur Bakker toegevoegd",
    "{name} is deelnemer geworden": "Fleur Bakker is deelnemer geworden",
    "{name} heeft de groep verlaten": "Daan Jansen heeft de groep verlaten",
    "{name} heeft {name} verwijderd": "Sanne de Vries heeft Daan Jansen verwijderd",
    "{name} hebt {name} verwijderd": "Je hebt Daan Jansen verwijderd",
    # tr
    "{name} kişisini ekledi": "Elif Kaya, Burak Demir kişisini ekledi",
    "{name} sizi ekledi": "Elif Kaya sizi ekledi",
    "{name} bağlantısıyla katıldı": "Zeynep Arslan bu grubun davet bağlantısıyla katıldı",
    "{name} kişisini çıkardı": "Elif Kaya, Burak Demir kişisini çıkardı",
    "{name} ayrıldı": "Zeynep Arslan ayrıldı",
    "{name} grubun simgesini değiştirdi": "Burak Demir grubun simgesini değiştirdi",
    "{name} grup açıklamasını değiştirdi": "Burak Demir grup açıklamasını değiştirdi",
    "{name} grubunu oluşturdu": 'Elif Kaya "Kahve ☕" grubunu oluşturdu',
    "{name} grubunun konusunu {name} olarak değiştirdi": 'Elif Kaya "Kahve ☕" grubunun konusunu "Cuma kahvesi ☕" '
    "olarak değiştirdi",
    "{name} grubun konusunu {name} olarak değiştirdi": 'Elif Kaya grubun konusunu "Cuma kahvesi ☕" olarak değiştirdi',
    "{name} grubun adını {name} olarak değiştirdi": 'Burak Demir grubun adını "Kahve ☕" olarak değiştirdi',
    "{name} grup adını {name} olarak değiştirdi": 'Burak Demir grup adını "Kahve ☕" olarak değiştirdi',
    "Grup adını {name} olarak değiştirdiniz": 'Grup adını "Kahve ☕" olarak değiştirdiniz',
    # id
    "{name} menambahkan {name}": "Dewi Lestari menambahkan Budi Santoso",
    "{name} mengeluarkan {name}": "Dewi Lestari mengeluarkan Budi Santoso",
    "{name} keluar": "Rina Wijaya keluar",
    "{name} membuat grup {name}": 'Dewi Lestari membuat grup "Arisan RT 05 🏘️"',
    "{name} telah bergabung menggunakan tautan undangan grup ini": "Rina Wijaya telah bergabung menggunakan tautan "
    "undangan grup ini",
    "{name} telah mengganti nomor teleponnya ke nomor baru{name}": "Budi Santoso telah mengganti nomor teleponnya "
    "ke nomor baru. Ketuk untuk mengirim pesan atau menambahkan nomor baru.",
    # fr
    "Les messages envoyés dans ce groupe sont désormais protégés avec le chiffrement de bout en bout": "Les "
    "messages envoyés dans ce groupe sont désormais protégés avec le chiffrement de bout en bout. Appuyez pour "
    "plus d'informations.",
    "{name} a ajouté {name}": "Camille Dubois a ajouté Hugo Martin",
    "Vous avez ajouté {name}": "Vous avez ajouté Inès Benali",
    "{name} a été ajouté(e)": "Inès Benali a été ajouté(e)",
    "Vous avez été ajouté(e)": "Vous avez été ajouté(e)",
    "{name} est parti(e)": "Hugo Martin est parti(e)",
    "{name} a retiré {name}": "Camille Dubois a retiré Hugo Martin",
    "{name} a été retiré(e)": "Hugo Martin a été retiré(e)",
    "{name} a changé l'icône de ce groupe": "Inès Benali a changé l'icône de ce groupe",
    "Vous avez changé l'icône de ce groupe": "Vous avez changé l'icône de ce groupe",
    "Vous avez changé le sujet en {name}": "Vous avez changé le sujet en « Coloc 🏠✨ »",
    "{name} a modifié le sujet en {name}": "Camille Dubois a modifié le sujet en « Coloc 🏠✨ »",
    "{name} a remplacé le sujet par {name}": "Camille Dubois a remplacé le sujet par « Coloc 🏠✨ »",
    "{name} a changé la description du groupe": "Inès Benali a changé la description du groupe",
    "{name} a changé de numéro de téléphone{name}": "Hugo Martin a changé de numéro de téléphone. Appuyez pour "
    "envoyer un message ou ajouter le nouveau numéro.",
    "{name} a créé le groupe {name}": "Camille Dubois a créé le groupe « Coloc 🏠 »",
    "{name} a créé ce groupe": "Camille Dubois a créé ce groupe",
    # it
    "{name} ha aggiunto {name}": "Giulia Romano ha aggiunto Marco Bianchi",
    "Hai aggiunto {name}": "Hai aggiunto Chiara Greco",
    "{name} ti ha aggiunto": "Giulia Romano ti ha aggiunto",
    "{name} è stato aggiunto": "Marco Bianchi è stato aggiunto",
    "{name} è entrato usando il link d'invito al gruppo": "Chiara Greco è entrato usando il link d'invito al gruppo",
    "{name} ha abbandonato": "Marco Bianchi ha abbandonato",
    "{name} ha rimosso {name}": "Giulia Romano ha rimosso Marco Bianchi",
    "Hai rimosso {name}": "Hai rimosso Marco Bianchi",
    "{name} ha cambiato l'oggetto da {name}": 'Giulia Romano ha cambiato l\'oggetto da "Cena di classe 🍝" a "Cena '
    'di classe 2024 🍝"',
    "{name} ha cambiato l'immagine {name}": "Chiara Greco ha cambiato l'immagine di questo gruppo",
    "{name} ha cambiato la descrizione del gruppo": "Chiara Greco ha cambiato la descrizione del gruppo",
    "{name} ha creato il gruppo {name}": 'Giulia Romano ha creato il gruppo "Cena di classe 🍝"',
    "{name} cambiato le impostazioni del gruppo {name}": "Giulia Romano ha cambiato le impostazioni del gruppo per "
    "consentire solo agli amministratori di modificare le info del gruppo",
    "Il tuo codice di sicurezza con {name}": "Il tuo codice di sicurezza con Marco Bianchi è cambiato. Tocca per "
    "maggiori info.",
    # nl (iOS)
    "Berichten en gesprekken worden end-to-end": "Berichten en gesprekken worden end-to-end versleuteld. Niemand "
    "buiten deze chat kan ze lezen of beluisteren, zelfs WhatsApp niet.",
    "{name} is deelnemer geworden via de uitnodigingslink van deze groep": "Fleur Bakker is deelnemer geworden via "
    "de uitnodigingslink van deze groep",
    "U bent deelnemer geworden via de uitnodigingslink van deze groep": "U bent deelnemer geworden via de "
    "uitnodigingslink van deze groep",
    "U hebt de groep verlaten": "U hebt de groep verlaten",
    "{name} heeft het onderwerp gewijzigd naar {name}": "Sanne de Vries heeft het onderwerp gewijzigd naar "
    "“Etentje vrijdag 🍝”",
    "U hebt het onderwerp gewijzigd naar {name}": "U hebt het onderwerp gewijzigd naar “Etentje vrijdag 🍝”",
    "{name} heeft de groepsafbeelding gewijzigd": "Daan Jansen heeft de groepsafbeelding gewijzigd",
    "U hebt de groepsafbeelding gewijzigd": "U hebt de groepsafbeelding gewijzigd",
    "{name} heeft de groepsomschrijving gewijzigd": "Fleur Bakker heeft de groepsomschrijving gewijzigd",
    "{name} heeft een nieuw telefoonnummer{name}": "Daan Jansen heeft een nieuw telefoonnummer. Tik om een bericht "
    "te sturen of om het nieuwe nummer toe te voegen.",
    "{name} heeft deze groep aangemaakt": "Sanne de Vries heeft deze groep aangemaakt",
    "U hebt deze groep aangemaakt": "U hebt deze groep aangemaakt",
    "Uw beveiligingscode voor {name} is gewijzigd{name}": "Uw beveiligingscode voor Daan Jansen is gewijzigd. Tik "
    "voor meer informatie.",
    # ru
    "{name} добавил(-а) {name}": "Анна Смирнова добавил(-а) Иван Петров",
    "{name} вышел(-а)": "Иван Петров вышел(-а)",
    "{name} удалил(-а) {name}": "Анна Смирнова удалил(-а) Иван Петров",
    "{name} изменил(-а) название группы {name}": 'Анна Смирнова изменил(-а) название группы на "Дача летом 🌲"',
    "{name} изменил(-а) картинку группы": "Ольга Козлова изменил(-а) картинку группы",
    "{name} изменил(-а) описание группы": "Ольга Козлова изменил(-а) описание группы",
    "{name} создал(-а) группу {name}": 'Анна Смирнова создал(-а) группу "Дача 🌲"',
    "{name} создал(-а) группу": "Анна Смирнова создал(-а) группу",
    "{name} отключил(-а) исчезающие сообщения": "Анна Смирнова отключил(-а) исчезающие сообщения",
    "Ваш код безопасности с контактом {name} изменился{name}": "Ваш код безопасности с контактом Иван Петров "
    "изменился. Подробнее",
    # pl, tr, id
    "Wiadomości i połączenia są w pełni zaszyfrowane": "Wiadomości i połączenia są w pełni zaszyfrowane. Nikt spoza "
    "czatu, nawet WhatsApp, nie może ich odczytać ani odsłuchać.",
    "Twój kod zabezpieczeń z użytkownikiem {name} zmienił się{name}": "Twój kod zabezpieczeń z użytkownikiem Piotr "
    "Wiśniewski zmienił się. Stuknij, aby dowiedzieć się więcej.",
    "{name} ile aranızdaki güvenlik kodu değişti{name}": "Burak Demir ile aranızdaki güvenlik kodu değişti. Daha "
    "fazla bilgi edinmek için dokunun.",
    "Kode keamanan Anda dengan {name} telah berubah{name}": "Kode keamanan Anda dengan Budi Santoso telah berubah. "
    "Ketuk untuk info selengkapnya.",
    "{name} mengubah subjek {name}": 'Dewi Lestari mengubah subjek dari "Arisan RT 05 🏘️" menjadi "Arisan RT 05 '
    '2025 🏘️"',
    "{name} mengubah ikon grup ini": "Rina Wijaya mengubah ikon grup ini",
    # es, fr, pt security-code lines
    "Cambió tu código de seguridad con {name}": "Cambió tu código de seguridad con Diego Martín. Pulsa para "
    "obtener más información.",
    "Votre code de sécurité avec {name} a changé{name}": "Votre code de sécurité avec Hugo Martin a changé. "
    "Appuyez pour en savoir plus.",
    "O seu código de segurança partilhado com {name} mudou{name}": "O seu código de segurança partilhado com Bruno "
    "Lima mudou. Toque para saber mais.",
    "Seu código de segurança com {name} mudou{name}": "Seu código de segurança com Bruno Lima mudou. Toque para "
    "saber mais.",
}  # fmt: skip

META_EXAMPLES: dict[str, tuple[str, str]] = {  # (sender_name, content)
    "{actor} reagiu {name} à sua mensagem": ("Carolina Souza", "Carolina reagiu com 😂 à sua mensagem"),
    "Reagiu {name} à sua mensagem": ("João Pereira", "Reagiu com 😂 à sua mensagem"),
    "Enviaste un archivo adjunto": ("Lucía Fernández", "Enviaste un archivo adjunto."),
    "Vous avez envoyé une pièce jointe": ("Camille Dubois", "Vous avez envoyé une pièce jointe."),
    "{actor} a envoyé une pièce jointe": ("Hugo Martin", "Hugo a envoyé une pièce jointe."),
    "{actor} a ajouté {name} au groupe": ("Camille Dubois", "Camille Dubois a ajouté Inès Benali au groupe."),
    "{actor} a quitté le groupe": ("Hugo Martin", "Hugo Martin a quitté le groupe."),
    "{actor} a nommé le groupe {name}": ("Camille Dubois", "Camille Dubois a nommé le groupe Coloc 🏠."),
    "{actor} a réagi {name} à votre message": ("Hugo Martin", "Hugo a réagi 😮 à votre message"),
    "{actor} a aimé un message": ("Camille Dubois", "Camille Dubois a aimé un message"),
    "{actor} a créé un sondage": ("Hugo Martin", "Hugo Martin a créé un sondage."),
    "{actor} a créé un sondage{name}": ("Camille Dubois", "Camille a créé un sondage : Resto vendredi ?"),
    "{actor} a voté pour {name}": (
        "Hugo Martin",
        "Hugo a voté pour « Pizza » dans le sondage Resto vendredi ?",
    ),
    "{actor} a démarré un appel": ("Camille Dubois", "Camille Dubois a démarré un appel."),
    "{actor} a démarré un appel vidéo": ("Hugo Martin", "Hugo a démarré un appel vidéo."),
    "Appel vidéo terminé": ("Hugo Martin", "Appel vidéo terminé"),
    "{actor} a manqué votre appel": ("Camille Dubois", "Camille a manqué votre appel."),
    "{actor} a manqué votre appel vidéo": ("Hugo Martin", "Hugo a manqué votre appel vidéo."),
    "Vous avez manqué un appel": ("Camille Dubois", "Vous avez manqué un appel."),
    "Vous avez manqué un appel de {name}": ("Hugo Martin", "Vous avez manqué un appel de Hugo Martin."),
    "{actor} a épinglé un message": ("Camille Dubois", "Camille a épinglé un message."),
    "{actor} a modifié le nom du groupe{name}": (
        "Hugo Martin",
        "Hugo Martin a modifié le nom du groupe en Coloc.",
    ),
    "Vous êtes maintenant connecté sur Messenger": (
        "Camille Dubois",
        "Vous êtes maintenant connecté sur Messenger",
    ),
    "Vous êtes maintenant connectés sur Messenger": (
        "Hugo Martin",
        "Vous êtes maintenant connectés sur Messenger",
    ),
    "{actor} heeft een bijlage verstuurd": ("Sanne de Vries", "Sanne heeft een bijlage verstuurd."),
    "Rozmowa zakończyła się": ("Kasia Nowak", "Rozmowa zakończyła się."),
    "{actor} dołączył do rozmowy": ("Piotr Wiśniewski", "Piotr dołączył do rozmowy."),
    "{actor} dołączyła do rozmowy": ("Ola Zielińska", "Ola dołączyła do rozmowy."),
    "{actor} rozpoczął rozmowę": ("Piotr Wiśniewski", "Piotr rozpoczął rozmowę."),
    "{actor} rozpoczęła rozmowę": ("Kasia Nowak", "Kasia rozpoczęła rozmowę."),
    "{actor} opuścił(a) grupę": ("Ola Zielińska", "Ola Zielińska opuścił(a) grupę."),
    "{actor} usunął użytkownika{name}": (
        "Piotr Wiśniewski",
        "Piotr usunął użytkownika Ola Zielińska z grupy.",
    ),
    "{actor} usunęła użytkownika{name}": ("Kasia Nowak", "Kasia usunęła użytkownika Ola Zielińska z grupy."),
    "{actor} ustawił nick użytkownika{name}": (
        "Piotr Wiśniewski",
        "Piotr ustawił nick użytkownika Kasia Nowak na Kasiula.",
    ),
    "Nadałeś(aś) grupie nazwę{name}": ("Kasia Nowak", "Nadałeś(aś) grupie nazwę Wyjazd w góry ⛰️."),
    "{actor} zmienił motyw": ("Piotr Wiśniewski", "Piotr zmienił motyw."),
    "{actor} {name} szybką reakcję jako {name}": (
        "Piotr Wiśniewski",
        "Piotr ustawił szybką reakcję jako 👍.",
    ),
    "Masz nieodebrane połączenie{name}": (
        "Piotr Wiśniewski",
        "Masz nieodebrane połączenie od Piotr Wiśniewski.",
    ),
    "{actor} {name} jako administratora grupy": (
        "Piotr Wiśniewski",
        "Piotr Wiśniewski ustawił Kasia Nowak jako administratora grupy.",
    ),
    "{name} innych użytkowników jesteście teraz administratorami": (
        "Kasia Nowak",
        "Ty i 2 innych użytkowników jesteście teraz administratorami.",
    ),
    "{actor} hat einen Anhang gesendet": ("Hans Müller", "Hans hat einen Anhang gesendet."),
    "{actor} wysłał załącznik": ("Piotr Wiśniewski", "Piotr wysłał załącznik."),
    "Wysłałeś(aś) załącznik": ("Kasia Nowak", "Wysłałeś(aś) załącznik."),
    "{actor} wysłał link": ("Piotr Wiśniewski", "Piotr wysłał link."),
    "Wysłałeś(aś) link": ("Kasia Nowak", "Wysłałeś(aś) link."),
    "{actor} wysłała załącznik": ("Kasia Nowak", "Kasia wysłała załącznik."),
    "{actor} przesyła załącznik": ("Ola Zielińska", "Ola przesyła załącznik."),
    "{actor} ustawił pseudonim{name}": ("Piotr Wiśniewski", "Piotr ustawił pseudonim Kasia Nowak: Kasiula."),
    "{actor} ustawiła pseudonim{name}": (
        "Kasia Nowak",
        "Kasia ustawiła pseudonim Piotr Wiśniewski: Piotruś.",
    ),
    "{actor} zmienił kolor czatu": ("Piotr Wiśniewski", "Piotr zmienił kolor czatu."),
    "{actor} zmieniła kolor czatu": ("Kasia Nowak", "Kasia zmieniła kolor czatu."),
    "{actor} zmienił kolor czatu{name}": ("Piotr Wiśniewski", "Piotr zmienił kolor czatu na niebieski."),
    "{actor} zmieniła kolor czatu{name}": ("Kasia Nowak", "Kasia zmieniła kolor czatu na różowy."),
    "{actor} dodał {name} do grupy": ("Piotr Wiśniewski", "Piotr Wiśniewski dodał Ola Zielińska do grupy."),
    "{actor} usunął członka grupy": ("Piotr Wiśniewski", "Piotr Wiśniewski usunął członka grupy."),
    "{actor} usunął(ęła) Ciebie z grupy": ("Kasia Nowak", "Kasia Nowak usunął(ęła) Ciebie z grupy."),
    "Opuściłeś(aś) grupę": ("Ola Zielińska", "Opuściłeś(aś) grupę."),
    "{actor} nadał(a) nazwę grupy {name}": (
        "Piotr Wiśniewski",
        "Piotr Wiśniewski nadał(a) nazwę grupy Wyjazd w góry ⛰️.",
    ),
    "{actor} utworzył plan": ("Piotr Wiśniewski", "Piotr Wiśniewski utworzył plan."),
    "{actor} zmienił godzinę planu na {name}": (
        "Piotr Wiśniewski",
        "Piotr zmienił godzinę planu na pt., 28 lut o 18:22.",
    ),
    "{actor} zmienił lokalizację planu na {name}": (
        "Piotr Wiśniewski",
        "Piotr zmienił lokalizację planu na Rynek 1.",
    ),
    "{actor} nazwał plan: {name}": ("Piotr Wiśniewski", "Piotr nazwał plan: Kręgle w piątek."),
    "Utworzyłeś przypomnienie: {name}": ("Kasia Nowak", "Utworzyłeś przypomnienie: Kręgle w piątek."),
    "Twoja odpowiedź na wydarzenie {name}": (
        "Kasia Nowak",
        "Twoja odpowiedź na wydarzenie Kręgle w piątek: Wezmę udział",
    ),
    "Odpowiedź {name} na wydarzenie {name}": (
        "Ola Zielińska",
        "Odpowiedź Ola Zielińska na wydarzenie Kręgle w piątek: Nie mogę wziąć udziału",
    ),
}


def _needs_example(row: Phrase) -> bool:
    return row.language != "en" and (row.rule == "template" or row.subkind == "encryption_notice")


def test_every_non_english_notice_row_has_an_example() -> None:
    rows = (*WHATSAPP_BODIES, *WHATSAPP_NOTICES)
    assert {row.text for row in rows if row.platform == "whatsapp" and _needs_example(row)} == set(
        WHATSAPP_EXAMPLES
    )
    assert {row.text for row in META_NOTICES if _needs_example(row)} == set(META_EXAMPLES)


def _row(rows: tuple[Phrase, ...], text: str) -> Phrase:
    [row] = [row for row in rows if row.text == text]
    return row


@pytest.mark.parametrize(("text", "line"), WHATSAPP_EXAMPLES.items(), ids=list(WHATSAPP_EXAMPLES))
def test_whatsapp_example_lines(tmp_path: Path, text: str, line: str) -> None:
    row = _row((*WHATSAPP_BODIES, *WHATSAPP_NOTICES), text)
    assert (WHATSAPP_NOTICE_MATCHER.find_template(line) or WHATSAPP_BODY_MATCHER.find(line)) is row
    message = _whatsapp(tmp_path, line)
    assert (message.kind, message.subkind, message.author) == ("system", row.subkind, "")


@pytest.mark.parametrize(("text", "example"), META_EXAMPLES.items(), ids=list(META_EXAMPLES))
def test_meta_example_lines(tmp_path: Path, text: str, example: tuple[str, str]) -> None:
    row = _row(META_NOTICES, text)
    sender, content = example
    assert META_MATCHER.find_template(content, messenger._actors(sender)) is row
    assert _meta(tmp_path, sender, content) == (row.kind, row.subkind)


def _meta(tmp_path: Path, sender: str, content: str) -> tuple[str, str | None]:
    data = {
        "participants": [{"name": sender}, {"name": "Sam Lee"}],
        "messages": [{"sender_name": sender, "timestamp_ms": 1_600_000_000_000, "content": content}],
    }
    thread = tmp_path / "inbox" / "thread_1"
    thread.mkdir(parents=True)
    (thread / "message_1.json").write_text(json.dumps(data), encoding="utf-8")
    [message] = messenger.parse(thread, ParseOptions())
    return message.kind, message.subkind


# A person's message that only mentions a notice, per language: a WhatsApp message body ("Name: text") is never
# a system line, and a system line that says more than the notice is not that notice.
PERSON_BODIES = [
    "Иван вышел(-а) покурить",
    "Анна создал(-а) группу? нет, это я",
    "Hugo est parti(e) 😂",
    "Marco ha abbandonato",
    "Jonas hat die Gruppe verlassen 😢",
    "Carmen salió del grupo jaja",
    "Thiago saiu",
    "Daan heeft de groep verlaten",
    "Zeynep ayrıldı",
    "Rina keluar",
]
LONGER_SYSTEM_LINES = [
    "Иван Петров вышел(-а) и вернулся",
    "Sanne de Vries heeft deze groep aangemaakt en weer verlaten",
    "Hugo Martin est parti(e) puis revenu(e)",
    "Marco Bianchi ha abbandonato e poi è tornato",
    "Mehmet Yılmaz hat die Gruppe verlassen und ist zurück",
    "Carmen Ruiz salió del grupo y volvió",
    "Thiago Alves saiu e voltou",
    "Daan Jansen heeft de groep verlaten en komt terug",
    "Zeynep Arslan ayrıldı ama geri döndü",
    "Rina Wijaya keluar lalu kembali",
]


@pytest.mark.parametrize("body", PERSON_BODIES)
def test_whatsapp_person_text_mentioning_a_notice_stays_text(tmp_path: Path, body: str) -> None:
    message = _whatsapp(tmp_path, f"Sam: {body}")
    assert (message.kind, message.subkind, message.text) == ("text", None, body)


@pytest.mark.parametrize("line", LONGER_SYSTEM_LINES)
def test_whatsapp_notice_templates_are_anchored(tmp_path: Path, line: str) -> None:
    message = _whatsapp(tmp_path, line)
    assert (message.kind, message.subkind) == ("system", "other")


@pytest.mark.parametrize(
    ("sender", "content"),
    [
        ("Ann Lee", "Hugo a envoyé une pièce jointe."),  # someone else's name: a person quoting the notice
        ("Ann Lee", "je crois que Ann a quitté le groupe hier"),
        ("Ann Lee", "Hugo a réagi 😮 à votre message"),
        ("Camille Dubois", "Vous avez manqué un appel important hier soir"),
        ("Hugo Martin", "Hugo a démarré un appel mais personne n'a répondu"),
        ("Hugo Martin", "Hugo a aimé un message de Léa, pas le tien"),
        ("Sanne de Vries", "Sanne heeft een bijlage verstuurd, maar ik zie niks"),
        ("Ann Lee", "Ann a quitté le groupe de foot, pas celui-ci"),
        ("Lucía Fernández", "Enviaste un archivo adjunto? no me llegó nada"),
        ("Carolina Souza", "João reagiu com 😂 à sua mensagem"),
        ("Kasia Nowak", "Piotr opuścił(a) grupę."),
        ("Kasia Nowak", "Rozmowa zakończyła się szybko, bo nie było zasięgu"),
        ("Ann Lee", "Hans hat einen Anhang gesendet."),
        ("Hans Müller", "Hans hat einen Anhang gesendet, aber ich sehe nichts"),
        ("Kasia Nowak", "Piotr wysłał załącznik."),
        ("Piotr Wiśniewski", "Piotr wysłał załącznik, ale nic nie widzę"),
        ("Kasia Nowak", "Piotr dodał Olę do grupy."),
        ("Kasia Nowak", "Piotr utworzył plan."),
        ("Piotr Wiśniewski", "Piotr utworzył plan, ale nikt nie przyszedł"),
        ("Kasia Nowak", "Piotr ustawił szybką reakcję jako 👍."),
        ("Kasia Nowak", "Piotr zmienił kolor czatu."),
        ("Kasia Nowak", "Piotr Wiśniewski ustawił Kasia Nowak jako administratora grupy."),
    ],
)
def test_meta_person_text_mentioning_a_notice_stays_text(tmp_path: Path, sender: str, content: str) -> None:
    assert _meta(tmp_path, sender, content) == ("text", None)


# --- a group name holding ": " ----------------------------------------------------------------------------
# The line's first ": " is then inside the quoted name, so the header would split it into a sender
# ('Jonas Weber hat den Betreff von „Skat') and a message; every notice in the table that quotes a group's
# name keeps it a notice, whether the verb comes before the name or after it (tr).

COLON_IN_GROUP_NAME = [
    ('Jo changed the subject from "Trip: Lisbon" to "Trip"', "rename"),
    ("Jonas Weber hat den Betreff von „Skat: Runde 2“ zu „Skat & Bier 🍺“ geändert.", "rename"),
    ('Lucía Fernández cambió el asunto de "Cumple: Sara 🎂" a "Fotos del cumple 📸"', "rename"),
    ("Camille Dubois a modifié le sujet en « Coloc : 🏠 »", "rename"),
    ('Rafael Costa mudou o assunto de "Futebol: quinta ⚽" para "Futebol: sexta ⚽"', "rename"),
    ('Giulia Romano ha creato il gruppo "Cena: classe 2024 🍝"', "settings"),
    ("Sanne de Vries heeft het onderwerp gewijzigd naar “Etentje: vrijdag 🍝”", "rename"),
    ('Анна Смирнова изменил(-а) название группы на "Дача: лето 🌲"', "rename"),
    ('Elif Kaya "Kahve: cuma ☕" grubunu oluşturdu', "settings"),
    ('Burak Demir grup adını "Kahve: cuma ☕" olarak değiştirdi', "rename"),
    ('Dewi Lestari membuat grup "Arisan: RT 05 🏘️"', "settings"),
]


@pytest.mark.parametrize(
    ("line", "subkind"), COLON_IN_GROUP_NAME, ids=[line for line, _ in COLON_IN_GROUP_NAME]
)
def test_whatsapp_group_name_with_a_colon_stays_a_notice(tmp_path: Path, line: str, subkind: str) -> None:
    message = _whatsapp(tmp_path, line)
    assert (message.kind, message.subkind, message.author, message.text) == ("system", subkind, "", line)


@pytest.mark.parametrize(
    ("line", "author", "text"),
    [
        # a sender whose name holds quotes, writing words of a notice: the ": " is not inside a quote
        (
            'Bob "Bobby" Smith: he changed the subject to "food"',
            'Bob "Bobby" Smith',
            'he changed the subject to "food"',
        ),
        (
            "Jonas „Jo“ Weber: hat den Betreff „Skat: neu“ geändert",
            "Jonas „Jo“ Weber",
            "hat den Betreff „Skat: neu“ geändert",
        ),
        # an open quote in the sender, but the line is no notice of the table
        ('Ann "the boss: hi" there', 'Ann "the boss', 'hi" there'),
    ],
)
def test_whatsapp_sender_with_quotes_stays_a_sender(
    tmp_path: Path, line: str, author: str, text: str
) -> None:
    message = _whatsapp(tmp_path, line)
    assert (message.kind, message.author, message.text) == ("text", author, text)

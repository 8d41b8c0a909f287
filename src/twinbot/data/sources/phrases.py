"""The notices and placeholders chat apps write in place of a message, per platform and language: one table
of data that the parsers compile their matchers from (no regular expressions: exact, prefix, suffix and
template checks, all linear).

A row's `text` is compared case-insensitively, with a trailing "." ignored on both sides. `{name}` in a
template stands for any text (a person's name, an emoji, a group name); in Meta templates `{actor}` must be
the message's sender, "You" or the sender's first name, so a person quoting such a line is not taken for a
notice.

Where each row comes from (do not add wording that no source shows):
    [formats]  ../shared/FORMATS.md and the English wording the exporters are documented to write
    [prior]    the lists twinbot's parsers carried before this table (es/de/fr/pt/it/nl WhatsApp wording)
    [cs-multi] public WhatsApp chat analyzers found with the code search: a multilingual "wrapped"
               analyzer's media/deleted lists (ru, pl, tr, id, es, it placeholders; ru deleted)
    [cs-tr]    public Turkish WhatsApp parsers (code search): "<Medya dahil edilmedi>", "Bu mesaj silindi",
               "görüntü/video/ses/belge/çıkartma dahil edilmedi", "(dosya ekli)", the encryption notice
    [cs-ru]    a public WhatsApp locale comparison and a Russian cleaner (code search): "<Без медиафайлов>",
               "(файл добавлен)", "Местоположение:", "Сообщения и звонки защищены", missed audio call
    [cs-pl]    public Polish WhatsApp fixtures/cleaners (code search): "<Pominięto multimedia>",
               "Ta wiadomość została usunięta", "Usunięto tę wiadomość", "(plik załączony)", "(załączony plik)"
    [cs-id]    public Indonesian WhatsApp parsers (code search): "<Media tidak disertakan>",
               "Pesan ini telah dihapus", "Pesan ini dihapus", "(file terlampir)"
    [meta-en]  the English notices of Messenger/Instagram downloads twinbot recognised before this table
    [cs-pt]    a Portuguese Instagram inbox mock (code search): "Reagiu com 👍 à sua mensagem"
    [tdesktop] Telegram Desktop's JSON export: service messages carry an `action` identifier (English, the
               same in every language), not localized text
The sources below were found with the code search's exact-string look-up, which names a file by its id in
the index (read it with `read_file id=...`), not by repository:
    [cs-de]    German WhatsApp system lines: a Python analyzer's de/en constants (id 42434808315: "hat die
               Gruppe verlassen", "Die Sicherheitsnummer von .* hat sich geändert", the group encryption
               notice) and a C# German analyzer (id 7605696550: "ist dieser Gruppe mit dem Einladungslink
               beigetreten", "hat in den Gruppen-Einstellungen festgelegt, ...")
    [cs-es]    Spanish WhatsApp system lines: a TypeScript table of group notices in en/es (id 70499579339)
    [cs-pt-wa] Portuguese WhatsApp system lines: an R normalizer of them (id 18764188821)
    [cs-nl]    Dutch WhatsApp system lines: an R analyzer of a Dutch group's export (id 15992839080)
    [cs-fr]    French WhatsApp system lines: a French chat analyzer's list of notices to skip (id 12511976398:
               "a changé l'icône de ce groupe", "Vous avez changé le sujet en", "a modifié le sujet en", "a
               remplacé le sujet par", "est parti(e)", "a retiré", "a ajouté", "a été ajouté(e)", the group
               encryption notice, ...) and a French WhatsApp reader's group hints (id 70406701559: "a créé le
               groupe", "a créé ce groupe")
    [cs-it]    Italian (and two Indonesian) WhatsApp system lines: a JavaScript table of events (id 27496825174:
               "ha creato il gruppo", "ha abbandonato", "ha aggiunto", "ti ha aggiunto", "è stato aggiunto",
               "ha rimosso", "ha cambiato l'oggetto da", "Il tuo codice di sicurezza con", "telah bergabung
               menggunakan tautan undangan grup ini", ...)
    [cs-tr-sys] Turkish WhatsApp system lines: Turkish cleaners and parsers (ids 37358115668, 70945638120,
               70135245868, 32945990093: "kişisini ekledi", "ayrıldı", "grubunu oluşturdu", "sizi ekledi",
               "kişisini çıkardı", "bağlantısıyla katıldı", "grubun simgesini", "grup açıklamasını")
    [cs-pl-e2e] the encryption notice in Polish WhatsApp export fixtures (ids 71266997197, 71320656112)
    [cs-id-sys] Indonesian system lines and the encryption notice: a parser (id 41406213453: "membuat
               grup", "menambahkan", "mengeluarkan", "keluar") and a Go test's export line (id 60578680619)
    [cs-es-meta] Spanish Instagram downloads: "Enviaste un archivo adjunto." in three parsers (ids 163799703,
               65892071560, 68720087826)
    [cs-pl-meta] a Polish Facebook download's parser, its list of notices to skip (id 46731092054): "Rozmowa
               zakończyła się.", "dołączył(a) do rozmowy.", "rozpoczął(ęła) rozmowę.", "opuścił(a) grupę.",
               "zmienił motyw.", "ustawił nick użytkownika", "usunął(ęła) użytkownika", "Nadałeś(aś) grupie nazwę",
               "Masz nieodebrane połączenie", "szybką reakcję jako", "jako administratora grupy.", "innych
               użytkowników jesteście teraz administratorami."
    [cs-fr-meta] a French Messenger download's notices in a metadata test (id 36453681027): "a envoyé une
               pièce jointe", "Vous avez envoyé une pièce jointe", "a ajouté .* au groupe", "a nommé le
               groupe", "a quitté le groupe"
    [wa-strings] a Dart WhatsApp export parser whose patterns list, per string key, the wording of
               WhatsApp's own iOS Localizable.strings and Android strings.xml in every app language (id
               5538425153): missed voice and video calls (tr, pl, id; ru video), deleted-message variants (ru,
               pl, id), omitted image/video/audio/sticker/GIF/document/contact card (ru, pl, tr, id, nl), live
               location and "location:" links (ru, pl, tr, id), iOS "<прикреплено:" and "<załączono:", the
               encryption notice (pl, nl) and the security-code line (ru, pl, tr, nl, id, es, fr, pt)
    [cs-ru-sys] Russian WhatsApp group lines: an importer's test with Android export lines (id 55750415342:
               'создал(-а) группу "…"'), an HTML builder for Russian exports (id 54930843058: "добавил(-а)",
               "вышел(-а)", "удалил(-а)", "изменил(-а) название/картинку/описание группы") and a rendered
               Russian group chat (id 58080037115: 'изменил(-а) название группы на "…"', "создал(-а) группу",
               "отключил(-а) исчезающие сообщения")
    [cs-nl-ios] Dutch WhatsApp lines in an analyzer of a Dutch group's iOS _chat.txt (id 33926580012): "heeft
               het onderwerp gewijzigd naar", "heeft de groepsafbeelding gewijzigd", "heeft de
               groepsomschrijving gewijzigd", "is deelnemer geworden via de uitnodigingslink van deze groep",
               "U hebt de groep verlaten", "heeft deze groep aangemaakt", "heeft een nieuw telefoonnummer. Tik
               om ...", "Visitekaartje weggelaten", "Berichten en gesprekken worden end-to-end versleuteld"
    [cs-id-wa] Indonesian markers in a Go WhatsApp importer (id 60365336519): "mengubah subjek", "mengubah
               ikon grup ini", "anda menghapus pesan ini", "panggilan suara/video tak terjawab"
    [cs-fr-meta2] a Messenger/Instagram download parser (comments in French) whose list of notices Meta
               writes as message content (id 62004585980): fr "a réagi … à votre message", "a aimé un message",
               "a créé un sondage", "a voté pour", "a démarré un appel", "appel vidéo terminé", "a manqué votre
               appel", "vous avez manqué un appel", "a épinglé un message", "a modifié le nom du groupe", "vous
               êtes maintenant connecté(s) sur messenger"; en "you are now connected on messenger"; nl "heeft
               een bijlage verstuurd"
    [cs-de-meta] a German Messenger download's message_1.json quoted in a chat-history viewer's README (id
               61375989371): "Hans hat einen Anhang gesendet."
    [cs-tr-subj] Turkish WhatsApp group-name changes: an analyzer of a Turkish iOS export (id 67132241119:
               'grubunun konusunu "…" olarak değiştirdi', 'Grup adını "…" olarak değiştirdi/değiştirdiniz')
               and a Turkish parser's group-title history (id 65846710462: 'grubun konusunu "…" olarak
               değiştirdi', 'grubun adını "…"', 'grup adını "…"')
    [cs-tr-poll] Turkish WhatsApp polls: an analyzer of a Turkish iOS export (id 67255189561) that keeps a poll
               by its "ANKET:" header (after U+200E), with "SEÇENEK:" options and "(N oy)" vote counts
    [cs-pl-fb-html] a Polish Messenger HTML download's analyzer, its anchored regexes of notices (id 44559427222,
               tested with export lines in id 45035007829): "… wysłał załącznik.", "Wysłałeś(aś) załącznik.",
               "… wysłał link.", "Wysłałeś(aś) link.", "… dodał … do grupy.", "… usunął członka grupy.",
               "… usunął(ęła) Ciebie z grupy.", "Opuściłeś(aś) grupę.", "… nadał(a) nazwę grupy ….", and a
               Messenger plan's notices: "… utworzył plan.", "… zmienił godzinę/lokalizację planu na ….", "… nazwał
               plan: ….", "Utworzyłeś przypomnienie: ….", "Twoja odpowiedź na wydarzenie …", "Odpowiedź … na
               wydarzenie …"
    [cs-pl-fb-json] a cleaner of a Polish Facebook download's message_*.json (id 60580689216), its "standard
               Messenger system messages": "wysłał załącznik.", "wysłała załącznik.", "przesyła załącznik.",
               "ustawił pseudonim", "ustawiła pseudonim", "zmienił kolor czatu", "zmieniła kolor czatu"
Gaps (no source found yet, so no rows): WhatsApp group lines in pl (the lists found were guesses, not export
wording, and a synthetic fixture's gendered "dodała" is not taken for it; pl has the encryption and
security-code lines only) and the invite-link join in ru; WhatsApp polls in ru, pl and id; Meta notices in it,
ru, tr and id, in nl and de all but the attachment notice; Meta reactions, unsent messages, calls and polls
in es, unsent messages in fr; reactions in pl (an app's own UI strings and notification texts are not the download's wording,
nor are Instagram inbox look-alikes: ru "Вы отправили вложение.", id "Anda mengirim lampiran." and an es one
that writes "Tú enviaste un archivo adjunto" where real downloads write "Enviaste un archivo adjunto."; nor
a notification reader's multilingual "unsent"/"a annulé l'envoi d'un message" patterns (id 69405771869), nor
the unconfirmed entries of an Instagram es fallback list, "enviaste una encuesta." among them (id 68720087826),
nor an es cleaner's "Te reaccionó a tu mensaje" (id 65892071560), nor other chat apps' own Polish and Russian
group notices). Without rows, messenger.py still tells Meta notices apart by a thread's own evidence: reaction
notices by the reactions the export lists, and others' notices by the same words after two senders' names
(system/other); the download owner's own notices ("You ...") in those languages are not caught that way.
WhatsApp polls without a row are told by their shape (whatsapp.is_poll_block), and WhatsApp group lines
without rows are system/other anyway (no "Name: ").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from twinbot.data.records import MessageKind, Subkind

Platform = Literal["whatsapp", "meta"]
MatchRule = Literal["exact", "prefix", "suffix", "template"]


@dataclass(frozen=True, slots=True)
class Phrase:
    platform: Platform
    language: str
    kind: MessageKind
    subkind: Subkind
    rule: MatchRule
    text: str
    source: str


def _rows(
    platform: Platform, language: str, kind: MessageKind, subkind: Subkind, rule: MatchRule, source: str,
    *texts: str,
) -> list[Phrase]:  # fmt: skip
    return [Phrase(platform, language, kind, subkind, rule, text, source) for text in texts]


W: Platform = "whatsapp"
M: Platform = "meta"

# --- WhatsApp: whole message bodies (after "Name: ") --------------------------------------------------
WHATSAPP_BODIES: tuple[Phrase, ...] = tuple(
    [
        # media that was not exported: the body stands for it
        *_rows(W, "en", "media", "placeholder", "exact", "formats",
               "<Media omitted>", "<Media omitted", "media omitted", "image omitted", "video omitted",
               "audio omitted", "sticker omitted", "GIF omitted", "<View once message omitted>",
               "view once message omitted", "null"),
        *_rows(W, "en", "media", "contact", "exact", "formats", "Contact card omitted"),
        *_rows(W, "en", "media", "location", "exact", "formats", "live location shared"),
        *_rows(W, "es", "media", "placeholder", "exact", "prior",
               "<Multimedia omitido>", "<Multimedia omitidos>", "imagen omitida", "video omitido",
               "audio omitido", "sticker omitido", "GIF omitido"),
        *_rows(W, "es", "media", "placeholder", "exact", "cs-multi", "<Archivo omitido>"),
        *_rows(W, "es", "media", "contact", "exact", "prior", "tarjeta de contacto omitida"),
        *_rows(W, "de", "media", "placeholder", "exact", "prior",
               "<Medien ausgeschlossen>", "<Medien weggelassen>", "Bild weggelassen", "Video weggelassen",
               "Audio weggelassen", "Sticker weggelassen", "GIF weggelassen"),
        *_rows(W, "de", "media", "contact", "exact", "prior", "Kontaktkarte weggelassen"),
        *_rows(W, "fr", "media", "placeholder", "exact", "prior",
               "<Médias omis>", "<Fichier omis>", "image absente", "vidéo absente", "audio omis",
               "audio absent", "autocollant omis", "GIF retiré", "image omise", "vidéo omise"),
        *_rows(W, "pt", "media", "placeholder", "exact", "prior",
               "<Mídia oculta>", "<Arquivo de mídia oculto>", "<Ficheiro multimédia omitido>",
               "imagem ocultada", "vídeo omitido", "áudio ocultado", "figurinha omitida", "imagem omitida",
               "áudio omitido"),
        *_rows(W, "pt", "media", "placeholder", "exact", "cs-multi", "<Mídia omitida>"),
        *_rows(W, "it", "media", "placeholder", "exact", "prior",
               "<Media omessi>", "<Media omesso>", "immagine omessa", "video omesso", "audio omesso",
               "sticker omesso", "GIF omessa"),
        *_rows(W, "it", "media", "placeholder", "exact", "cs-multi", "GIF esclusa", "sticker non incluso"),
        *_rows(W, "nl", "media", "placeholder", "exact", "prior",
               "<Media weggelaten>", "afbeelding weggelaten", "video weggelaten", "audio weggelaten",
               "sticker weggelaten", "GIF weggelaten"),
        *_rows(W, "ru", "media", "placeholder", "exact", "cs-ru", "<Без медиафайлов>"),
        *_rows(W, "ru", "media", "placeholder", "exact", "cs-multi", "<Файл пропущен>"),
        *_rows(W, "tr", "media", "placeholder", "exact", "cs-tr",
               "<Medya dahil edilmedi>", "görüntü dahil edilmedi", "video dahil edilmedi",
               "ses dahil edilmedi", "belge dahil edilmedi", "çıkartma dahil edilmedi"),
        *_rows(W, "tr", "media", "placeholder", "exact", "cs-multi", "<Medya atlanmış>"),
        *_rows(W, "pl", "media", "placeholder", "exact", "cs-pl", "<Pominięto multimedia>"),
        *_rows(W, "pl", "media", "placeholder", "exact", "cs-multi", "<pliki pominięto>"),
        *_rows(W, "id", "media", "placeholder", "exact", "cs-id", "<Media tidak disertakan>"),
        *_rows(W, "ru", "media", "placeholder", "exact", "wa-strings",
               "изображение отсутствует", "видео отсутствует", "аудиофайл отсутствует", "стикер не добавлен",
               "GIF отсутствует"),
        *_rows(W, "pl", "media", "placeholder", "exact", "wa-strings",
               "obraz pominięty", "wideo pominięte", "audio pominięte", "pominięto naklejkę", "Plik GIF pominięty"),
        *_rows(W, "tr", "media", "placeholder", "exact", "wa-strings", "GIF dahil edilmedi"),
        *_rows(W, "id", "media", "placeholder", "exact", "wa-strings",
               "gambar tidak disertakan", "video tidak disertakan", "audio tidak disertakan", "stiker tidak disertakan",
               "GIF tidak disertakan"),
        *_rows(W, "ru", "media", "contact", "exact", "wa-strings", "Карточка контакта отсутствует"),
        *_rows(W, "pl", "media", "contact", "exact", "wa-strings", "Pominięta wizytówka kontaktu"),
        *_rows(W, "tr", "media", "contact", "exact", "wa-strings", "Kişi kartı dahil edilmedi"),
        *_rows(W, "id", "media", "contact", "exact", "wa-strings", "Kartu kontak tidak disertakan"),
        *_rows(W, "nl", "media", "contact", "exact", "cs-nl-ios", "Visitekaartje weggelaten"),
        *_rows(W, "ru", "media", "location", "exact", "wa-strings", "Геоданные отправлены"),
        *_rows(W, "pl", "media", "location", "exact", "wa-strings", "udostępniona transmisja położenia"),
        *_rows(W, "tr", "media", "location", "exact", "wa-strings", "Mevcut konum paylaşıldı"),
        *_rows(W, "id", "media", "location", "exact", "wa-strings", "Lokasi terkini dibagikan"),
        # iOS documents: "report.pdf • 3 pages document omitted"
        *_rows(W, "en", "media", "placeholder", "suffix", "formats", "document omitted"),
        *_rows(W, "es", "media", "placeholder", "suffix", "prior", "documento omitido"),
        *_rows(W, "de", "media", "placeholder", "suffix", "prior", "Dokument weggelassen"),
        *_rows(W, "fr", "media", "placeholder", "suffix", "prior", "document omis"),
        *_rows(W, "pt", "media", "placeholder", "suffix", "prior", "documento ocultado"),
        *_rows(W, "it", "media", "placeholder", "suffix", "prior", "documento omesso"),
        *_rows(W, "nl", "media", "placeholder", "suffix", "prior", "document weggelaten"),
        *_rows(W, "ru", "media", "placeholder", "suffix", "wa-strings", "документ отсутствует"),
        *_rows(W, "pl", "media", "placeholder", "suffix", "wa-strings", "dokument pominięty"),
        *_rows(W, "id", "media", "placeholder", "suffix", "wa-strings", "dokumen tidak disertakan"),
        # Android exports with media: "IMG-20200312-WA0001.jpg (file attached)" (the first line's end)
        *_rows(W, "en", "media", "attachment", "suffix", "formats", "(file attached)"),
        *_rows(W, "es", "media", "attachment", "suffix", "prior", "(archivo adjunto)"),
        *_rows(W, "de", "media", "attachment", "suffix", "prior", "(Datei angehängt)"),
        *_rows(W, "fr", "media", "attachment", "suffix", "prior", "(fichier joint)"),
        *_rows(W, "pt", "media", "attachment", "suffix", "prior", "(arquivo anexado)", "(ficheiro anexado)"),
        *_rows(W, "it", "media", "attachment", "suffix", "prior", "(file allegato)"),
        *_rows(W, "nl", "media", "attachment", "suffix", "prior", "(bestand bijgevoegd)"),
        *_rows(W, "ru", "media", "attachment", "suffix", "cs-ru", "(файл добавлен)"),
        *_rows(W, "tr", "media", "attachment", "suffix", "cs-tr", "(dosya ekli)"),
        *_rows(W, "pl", "media", "attachment", "suffix", "cs-pl", "(plik załączony)", "(załączony plik)"),
        *_rows(W, "id", "media", "attachment", "suffix", "cs-id", "(file terlampir)"),
        # iOS exports with media: "‎<attached: 00000012-PHOTO-2020-03-12-14-05-23.jpg>"
        *_rows(W, "en", "media", "attachment", "prefix", "formats", "<attached:"),
        *_rows(W, "es", "media", "attachment", "prefix", "prior", "<adjunto:"),
        *_rows(W, "de", "media", "attachment", "prefix", "prior", "<Anhang:"),
        *_rows(W, "fr", "media", "attachment", "prefix", "prior", "<pièce jointe :", "<pièce jointe:",
               "<fichier joint :", "<fichier joint:"),
        *_rows(W, "pt", "media", "attachment", "prefix", "prior", "<anexado:", "<anexo:"),
        *_rows(W, "it", "media", "attachment", "prefix", "prior", "<allegato:"),
        *_rows(W, "nl", "media", "attachment", "prefix", "prior", "<bijgevoegd:", "<bijlage:"),
        *_rows(W, "ru", "media", "attachment", "prefix", "wa-strings", "<прикреплено:"),
        *_rows(W, "pl", "media", "attachment", "prefix", "wa-strings", "<załączono:"),
        # shared locations: "location: https://maps.google.com/?q=..."
        *_rows(W, "en", "media", "location", "prefix", "formats", "location: http", "live location: http"),
        *_rows(W, "es", "media", "location", "prefix", "prior", "ubicación: http"),
        *_rows(W, "de", "media", "location", "prefix", "prior", "Standort: http"),
        *_rows(W, "fr", "media", "location", "prefix", "prior", "position : http", "position: http",
               "localisation : http", "localisation: http"),
        *_rows(W, "pt", "media", "location", "prefix", "prior", "localização: http"),
        *_rows(W, "it", "media", "location", "prefix", "prior", "posizione: http"),
        *_rows(W, "nl", "media", "location", "prefix", "prior", "locatie: http"),
        *_rows(W, "ru", "media", "location", "prefix", "cs-ru", "Местоположение: http"),
        *_rows(W, "tr", "media", "location", "prefix", "wa-strings", "konum: http"),
        *_rows(W, "pl", "media", "location", "prefix", "wa-strings", "położenie: http"),
        *_rows(W, "id", "media", "location", "prefix", "wa-strings", "lokasi: http"),
        # polls: "POLL:\nQuestion\nOPTION: a (2 votes)"
        *_rows(W, "en", "media", "poll", "prefix", "formats", "POLL:"),
        *_rows(W, "es", "media", "poll", "prefix", "prior", "ENCUESTA:"),
        *_rows(W, "de", "media", "poll", "prefix", "prior", "UMFRAGE:"),
        *_rows(W, "fr", "media", "poll", "prefix", "prior", "SONDAGE :", "SONDAGE:"),
        *_rows(W, "pt", "media", "poll", "prefix", "prior", "ENQUETE:"),
        *_rows(W, "it", "media", "poll", "prefix", "prior", "SONDAGGIO:"),
        *_rows(W, "nl", "media", "poll", "prefix", "prior", "PEILING:"),
        *_rows(W, "tr", "media", "poll", "prefix", "cs-tr-poll", "ANKET:"),
        # deleted messages
        *_rows(W, "en", "system", "deleted", "exact", "formats",
               "This message was deleted", "You deleted this message", "This message was deleted by admin"),
        *_rows(W, "es", "system", "deleted", "exact", "prior",
               "Se eliminó este mensaje", "Eliminaste este mensaje", "Este mensaje fue eliminado"),
        *_rows(W, "de", "system", "deleted", "exact", "prior",
               "Diese Nachricht wurde gelöscht", "Du hast diese Nachricht gelöscht"),
        *_rows(W, "fr", "system", "deleted", "exact", "prior",
               "Ce message a été supprimé", "Vous avez supprimé ce message"),
        *_rows(W, "pt", "system", "deleted", "exact", "prior",
               "Esta mensagem foi apagada", "Você apagou esta mensagem", "Apagou esta mensagem",
               "Esta mensagem foi eliminada", "Eliminou esta mensagem"),
        *_rows(W, "it", "system", "deleted", "exact", "prior",
               "Questo messaggio è stato eliminato", "Hai eliminato questo messaggio"),
        *_rows(W, "nl", "system", "deleted", "exact", "prior",
               "Dit bericht is verwijderd", "Je hebt dit bericht verwijderd", "U hebt dit bericht verwijderd"),
        *_rows(W, "ru", "system", "deleted", "exact", "cs-multi", "Это сообщение удалено",
               "Вы удалили это сообщение"),
        *_rows(W, "tr", "system", "deleted", "exact", "cs-tr", "Bu mesaj silindi", "Bu mesajı sildiniz"),
        *_rows(W, "pl", "system", "deleted", "exact", "cs-pl", "Ta wiadomość została usunięta",
               "Usunięto tę wiadomość"),
        *_rows(W, "id", "system", "deleted", "exact", "cs-id", "Pesan ini telah dihapus", "Pesan ini dihapus"),
        *_rows(W, "ru", "system", "deleted", "exact", "wa-strings", "Данное сообщение удалено",
               "Вы удалили данное сообщение"),
        *_rows(W, "pl", "system", "deleted", "exact", "wa-strings", "Usunąłeś(-ęłaś) tę wiadomość",
               "Usunąłeś(aś) tę wiadomość"),
        *_rows(W, "id", "system", "deleted", "exact", "wa-strings", "Anda menghapus pesan ini",
               "Anda telah menghapus pesan ini"),
        *_rows(W, "en", "system", "placeholder", "exact", "prior", "Waiting for this message. This may take a while"),
        # calls (the body starts with these; "Missed voice call, Tap to call back" and similar follow)
        *_rows(W, "en", "call", "call", "prefix", "formats",
               "Missed voice call", "Missed video call", "Missed group voice call", "Missed group video call"),
        *_rows(W, "es", "call", "call", "prefix", "prior",
               "Llamada perdida", "Llamada de voz perdida", "Videollamada perdida"),
        *_rows(W, "de", "call", "call", "prefix", "prior",
               "Verpasster Sprachanruf", "Verpasster Videoanruf", "Verpasster Anruf"),
        *_rows(W, "fr", "call", "call", "prefix", "prior", "Appel vocal manqué", "Appel vidéo manqué", "Appel manqué"),
        *_rows(W, "pt", "call", "call", "prefix", "prior",
               "Chamada de voz perdida", "Chamada de vídeo perdida", "Chamada perdida"),
        *_rows(W, "it", "call", "call", "prefix", "prior", "Chiamata vocale persa", "Videochiamata persa", "Chiamata persa"),
        *_rows(W, "nl", "call", "call", "prefix", "prior",
               "Gemiste spraakoproep", "Gemiste video-oproep", "Gemiste oproep", "Gemist spraakgesprek"),
        *_rows(W, "ru", "call", "call", "prefix", "cs-ru", "Пропущенный аудиозвонок"),
        *_rows(W, "ru", "call", "call", "prefix", "wa-strings", "Пропущенный видеозвонок"),
        *_rows(W, "tr", "call", "call", "prefix", "wa-strings", "Cevapsız sesli arama", "Cevapsız görüntülü arama"),
        *_rows(W, "pl", "call", "call", "prefix", "wa-strings",
               "Nieodebrane połączenie", "Nieodebrane poł. głosowe", "Nieodebrane poł. wideo"),
        *_rows(W, "id", "call", "call", "prefix", "wa-strings",
               "Panggilan suara tak terjawab", "Panggilan video tak terjawab"),
        # the encryption notice (iOS writes it with the chat's name as the sender)
        *_rows(W, "en", "system", "encryption_notice", "prefix", "formats",
               "Messages and calls are end-to-end encrypted", "Messages to this group are now secured",
               "Messages to this chat and calls are now secured", "Messages you send to this group are now secured",
               "Messages you send to this chat and calls are now secured"),
        *_rows(W, "es", "system", "encryption_notice", "prefix", "prior",
               "Los mensajes y las llamadas están cifrados", "Los mensajes y llamadas están cifrados"),
        *_rows(W, "de", "system", "encryption_notice", "prefix", "prior", "Nachrichten und Anrufe sind Ende-zu-Ende"),
        *_rows(W, "fr", "system", "encryption_notice", "prefix", "prior", "Les messages et les appels sont chiffrés"),
        *_rows(W, "pt", "system", "encryption_notice", "prefix", "prior",
               "As mensagens e as chamadas são protegidas", "As mensagens e chamadas são protegidas"),
        *_rows(W, "it", "system", "encryption_notice", "prefix", "prior", "I messaggi e le chiamate sono crittografati"),
        *_rows(W, "nl", "system", "encryption_notice", "prefix", "prior", "Berichten en oproepen worden end-to-end"),
        *_rows(W, "ru", "system", "encryption_notice", "prefix", "cs-ru", "Сообщения и звонки защищены"),
        *_rows(W, "tr", "system", "encryption_notice", "prefix", "cs-tr", "Mesajlar ve aramalar uçtan uca"),
        *_rows(W, "de", "system", "encryption_notice", "prefix", "cs-de",
               "Nachrichten an diese Gruppe sind jetzt mit Ende-zu-Ende-Verschlüsselung geschützt",
               "Nachrichten, die du in diesem Chat sendest, sowie Anrufe, sind jetzt mit Ende-zu-Ende"),
        *_rows(W, "pl", "system", "encryption_notice", "prefix", "cs-pl-e2e", "Wiadomości i połączenia są szyfrowane"),
        *_rows(W, "id", "system", "encryption_notice", "prefix", "cs-id-sys", "Pesan dan panggilan terenkripsi"),
        *_rows(W, "fr", "system", "encryption_notice", "prefix", "cs-fr",
               "Les messages envoyés dans ce groupe sont désormais protégés avec le chiffrement de bout en bout"),
        *_rows(W, "pl", "system", "encryption_notice", "prefix", "wa-strings",
               "Wiadomości i połączenia są w pełni zaszyfrowane"),
        *_rows(W, "nl", "system", "encryption_notice", "prefix", "cs-nl-ios", "Berichten en gesprekken worden end-to-end"),
    ]
)  # fmt: skip

# --- WhatsApp: system lines (no "Name: "), English wording ---------------------------------------------
WHATSAPP_NOTICES: tuple[Phrase, ...] = tuple(
    [
        *_rows(W, "en", "system", "member_join", "template", "formats",
               "You were added", "{name} added {name}", "{name} added you", "{name} joined using this group's invite link",
               "{name} joined using your invite", "You joined using this group's invite link"),
        *_rows(W, "en", "system", "member_leave", "template", "formats",
               "{name} left", "{name} removed {name}", "{name} removed you", "You left"),
        *_rows(W, "en", "system", "rename", "template", "formats",
               "{name} changed the subject from {name}", "{name} changed the subject to {name}",
               "{name} changed this group's icon", "{name} deleted this group's icon",
               "{name} changed the group description", "{name} changed their phone number{name}"),
        *_rows(W, "en", "system", "settings", "template", "formats",
               "{name} created group {name}", "{name} turned on disappearing messages{name}",
               "{name} turned off disappearing messages{name}", "{name} changed this group's settings{name}",
               "{name} changed the settings so{name}"),
        *_rows(W, "en", "system", "pin", "template", "formats", "{name} pinned a message"),
        *_rows(W, "en", "system", "encryption_notice", "template", "formats",
               "Your security code with {name} changed{name}"),
        *_rows(W, "de", "system", "member_join", "template", "cs-de",
               "{name} hat {name} hinzugefügt", "{name} ist dieser Gruppe mit dem Einladungslink beigetreten"),
        *_rows(W, "de", "system", "member_leave", "template", "cs-de",
               "{name} hat die Gruppe verlassen", "{name} hat {name} entfernt"),
        *_rows(W, "de", "system", "rename", "template", "cs-de",
               "{name} hat den Betreff {name} geändert", "{name} hat die Gruppenbeschreibung geändert",
               "{name} hat das Gruppenbild geändert", "{name} hat das Gruppenbild gelöscht"),
        *_rows(W, "de", "system", "settings", "template", "cs-de",
               "{name} hat die Gruppe {name} erstellt", "{name} hat in den Gruppen-Einstellungen festgelegt{name}"),
        *_rows(W, "de", "system", "encryption_notice", "template", "cs-de",
               "Die Sicherheitsnummer von {name} hat sich geändert{name}"),
        *_rows(W, "es", "system", "member_join", "template", "cs-es",
               "{name} te añadió", "Añadiste a {name}", "{name} añadió a {name}",
               "Te uniste usando el enlace de invitación de este grupo",
               "{name} se unió usando el enlace de invitación de este grupo"),
        *_rows(W, "es", "system", "member_leave", "template", "cs-es",
               "Saliste del grupo", "{name} salió del grupo", "{name} te eliminó", "Eliminaste a {name}",
               "{name} eliminó a {name}"),
        *_rows(W, "es", "system", "rename", "template", "cs-es",
               "{name} cambió el asunto de {name} a {name}", "Cambiaste el asunto de {name} a {name}",
               "{name} cambió el nombre del grupo a {name}", "{name} cambió el ícono de este grupo",
               "Cambiaste el ícono de este grupo", "{name} cambió la foto del grupo"),
        *_rows(W, "es", "system", "settings", "template", "cs-es",
               "{name} creó el grupo {name}", "Creaste el grupo {name}", "{name} creó este grupo", "Creaste este grupo"),
        *_rows(W, "pt", "system", "member_join", "template", "cs-pt-wa",
               "{name} adicionou {name}", "{name} entrou usando o link de convite deste grupo"),
        *_rows(W, "pt", "system", "member_leave", "template", "cs-pt-wa", "{name} removeu {name}", "{name} saiu"),
        *_rows(W, "pt", "system", "rename", "template", "cs-pt-wa",
               "{name} mudou o assunto de {name} para {name}", "{name} mudou a descrição do grupo",
               "{name} mudou a imagem do grupo"),
        *_rows(W, "pt", "system", "settings", "template", "cs-pt-wa", "{name} criou o grupo {name}"),
        *_rows(W, "nl", "system", "member_join", "template", "cs-nl",
               "{name} heeft {name} toegevoegd", "{name} hebt {name} toegevoegd", "{name} is deelnemer geworden"),
        *_rows(W, "nl", "system", "member_leave", "template", "cs-nl",
               "{name} heeft de groep verlaten", "{name} heeft {name} verwijderd", "{name} hebt {name} verwijderd"),
        *_rows(W, "tr", "system", "member_join", "template", "cs-tr-sys",
               "{name} kişisini ekledi", "{name} sizi ekledi", "{name} bağlantısıyla katıldı"),
        *_rows(W, "tr", "system", "member_leave", "template", "cs-tr-sys", "{name} kişisini çıkardı", "{name} ayrıldı"),
        *_rows(W, "tr", "system", "rename", "template", "cs-tr-sys",
               "{name} grubun simgesini değiştirdi", "{name} grup açıklamasını değiştirdi"),
        *_rows(W, "tr", "system", "settings", "template", "cs-tr-sys", "{name} grubunu oluşturdu"),
        *_rows(W, "tr", "system", "rename", "template", "cs-tr-subj",
               "{name} grubunun konusunu {name} olarak değiştirdi", "{name} grubun konusunu {name} olarak değiştirdi",
               "{name} grubun adını {name} olarak değiştirdi", "{name} grup adını {name} olarak değiştirdi",
               "Grup adını {name} olarak değiştirdiniz"),
        # before "{name} menambahkan {name}": the number-change notice ends "... atau menambahkan nomor baru"
        *_rows(W, "id", "system", "member_join", "template", "cs-it",
               "{name} telah bergabung menggunakan tautan undangan grup ini"),
        *_rows(W, "id", "system", "rename", "template", "cs-it",
               "{name} telah mengganti nomor teleponnya ke nomor baru{name}"),
        *_rows(W, "id", "system", "member_join", "template", "cs-id-sys", "{name} menambahkan {name}"),
        *_rows(W, "id", "system", "member_leave", "template", "cs-id-sys", "{name} mengeluarkan {name}", "{name} keluar"),
        *_rows(W, "id", "system", "settings", "template", "cs-id-sys", "{name} membuat grup {name}"),
        *_rows(W, "fr", "system", "member_join", "template", "cs-fr",
               "{name} a ajouté {name}", "Vous avez ajouté {name}", "{name} a été ajouté(e)", "Vous avez été ajouté(e)"),
        *_rows(W, "fr", "system", "member_leave", "template", "cs-fr",
               "{name} est parti(e)", "{name} a retiré {name}", "{name} a été retiré(e)"),
        *_rows(W, "fr", "system", "rename", "template", "cs-fr",
               "{name} a changé l'icône de ce groupe", "Vous avez changé l'icône de ce groupe",
               "Vous avez changé le sujet en {name}", "{name} a modifié le sujet en {name}",
               "{name} a remplacé le sujet par {name}", "{name} a changé la description du groupe",
               "{name} a changé de numéro de téléphone{name}"),
        *_rows(W, "fr", "system", "settings", "template", "cs-fr", "{name} a créé le groupe {name}", "{name} a créé ce groupe"),
        *_rows(W, "it", "system", "member_join", "template", "cs-it",
               "{name} ha aggiunto {name}", "Hai aggiunto {name}", "{name} ti ha aggiunto", "{name} è stato aggiunto",
               "{name} è entrato usando il link d'invito al gruppo"),
        *_rows(W, "it", "system", "member_leave", "template", "cs-it",
               "{name} ha abbandonato", "{name} ha rimosso {name}", "Hai rimosso {name}"),
        *_rows(W, "it", "system", "rename", "template", "cs-it",
               "{name} ha cambiato l'oggetto da {name}", "{name} ha cambiato l'immagine {name}",
               "{name} ha cambiato la descrizione del gruppo"),
        *_rows(W, "it", "system", "settings", "template", "cs-it",
               "{name} ha creato il gruppo {name}", "{name} cambiato le impostazioni del gruppo {name}"),
        *_rows(W, "it", "system", "encryption_notice", "template", "cs-it", "Il tuo codice di sicurezza con {name}"),
        *_rows(W, "nl", "system", "member_join", "template", "cs-nl-ios",
               "{name} is deelnemer geworden via de uitnodigingslink van deze groep",
               "U bent deelnemer geworden via de uitnodigingslink van deze groep"),
        *_rows(W, "nl", "system", "member_leave", "template", "cs-nl-ios", "U hebt de groep verlaten"),
        *_rows(W, "nl", "system", "rename", "template", "cs-nl-ios",
               "{name} heeft het onderwerp gewijzigd naar {name}", "U hebt het onderwerp gewijzigd naar {name}",
               "{name} heeft de groepsafbeelding gewijzigd", "U hebt de groepsafbeelding gewijzigd",
               "{name} heeft de groepsomschrijving gewijzigd", "{name} heeft een nieuw telefoonnummer{name}"),
        *_rows(W, "nl", "system", "settings", "template", "cs-nl-ios",
               "{name} heeft deze groep aangemaakt", "U hebt deze groep aangemaakt"),
        *_rows(W, "ru", "system", "member_join", "template", "cs-ru-sys", "{name} добавил(-а) {name}"),
        *_rows(W, "ru", "system", "member_leave", "template", "cs-ru-sys", "{name} вышел(-а)", "{name} удалил(-а) {name}"),
        *_rows(W, "ru", "system", "rename", "template", "cs-ru-sys",
               "{name} изменил(-а) название группы {name}", "{name} изменил(-а) картинку группы",
               "{name} изменил(-а) описание группы"),
        *_rows(W, "ru", "system", "settings", "template", "cs-ru-sys",
               "{name} создал(-а) группу {name}", "{name} создал(-а) группу",
               "{name} отключил(-а) исчезающие сообщения"),
        *_rows(W, "id", "system", "rename", "template", "cs-id-wa",
               "{name} mengubah subjek {name}", "{name} mengubah ikon grup ini"),
        # the security-code line, in the words of the app's own string tables
        *_rows(W, "ru", "system", "encryption_notice", "template", "wa-strings",
               "Ваш код безопасности с контактом {name} изменился{name}"),
        *_rows(W, "pl", "system", "encryption_notice", "template", "wa-strings",
               "Twój kod zabezpieczeń z użytkownikiem {name} zmienił się{name}"),
        *_rows(W, "tr", "system", "encryption_notice", "template", "wa-strings",
               "{name} ile aranızdaki güvenlik kodu değişti{name}"),
        *_rows(W, "nl", "system", "encryption_notice", "template", "wa-strings",
               "Uw beveiligingscode voor {name} is gewijzigd{name}"),
        *_rows(W, "id", "system", "encryption_notice", "template", "wa-strings",
               "Kode keamanan Anda dengan {name} telah berubah{name}"),
        *_rows(W, "es", "system", "encryption_notice", "template", "wa-strings",
               "Cambió tu código de seguridad con {name}"),
        *_rows(W, "fr", "system", "encryption_notice", "template", "wa-strings",
               "Votre code de sécurité avec {name} a changé{name}"),
        *_rows(W, "pt", "system", "encryption_notice", "template", "wa-strings",
               "O seu código de segurança partilhado com {name} mudou{name}",
               "Seu código de segurança com {name} mudou{name}"),
    ]
)  # fmt: skip

# --- Meta (Messenger / Instagram): texts the export writes as if a person had sent them ----------------
META_NOTICES: tuple[Phrase, ...] = tuple(
    [
        *_rows(M, "en", "media", "attachment", "template", "meta-en",
               "{actor} sent an attachment", "{actor} sent a photo", "{actor} sent a video", "{actor} sent a GIF",
               "{actor} sent a sticker", "{actor} sent a voice message", "{actor} sent an audio clip",
               "{actor} sent a file", "{actor} sent a link", "{actor} sent a post", "{actor} sent a reel",
               "{actor} sent a story", "{actor} sent {name} photos", "{actor} sent {name} videos"),
        *_rows(M, "en", "media", "location", "template", "meta-en",
               "{actor} sent a location", "{actor} sent a live location"),
        *_rows(M, "en", "system", "reaction", "template", "meta-en",
               "{actor} reacted {name} to your message", "{actor} reacted {name} to a message",
               "{actor} reacted {name} to their message", "{actor} reacted {name} to his message",
               "{actor} reacted {name} to her message", "{actor} reacted {name} to the message",
               "{actor} liked a message", "Reacted {name} to your message", "Reacted {name} to a message",
               "Liked a message"),
        *_rows(M, "pt", "system", "reaction", "template", "cs-pt",
               "{actor} reagiu {name} à sua mensagem", "Reagiu {name} à sua mensagem"),
        *_rows(M, "es", "media", "attachment", "template", "cs-es-meta", "Enviaste un archivo adjunto"),
        *_rows(M, "de", "media", "attachment", "template", "cs-de-meta", "{actor} hat einen Anhang gesendet"),
        *_rows(M, "fr", "media", "attachment", "template", "cs-fr-meta",
               "Vous avez envoyé une pièce jointe", "{actor} a envoyé une pièce jointe"),
        *_rows(M, "fr", "system", "member_join", "template", "cs-fr-meta", "{actor} a ajouté {name} au groupe"),
        *_rows(M, "fr", "system", "member_leave", "template", "cs-fr-meta", "{actor} a quitté le groupe"),
        *_rows(M, "fr", "system", "rename", "template", "cs-fr-meta", "{actor} a nommé le groupe {name}"),
        *_rows(M, "fr", "system", "reaction", "template", "cs-fr-meta2",
               "{actor} a réagi {name} à votre message", "{actor} a aimé un message"),
        *_rows(M, "fr", "system", "poll", "template", "cs-fr-meta2",
               "{actor} a créé un sondage", "{actor} a créé un sondage{name}", "{actor} a voté pour {name}"),
        *_rows(M, "fr", "call", "call", "template", "cs-fr-meta2",
               "{actor} a démarré un appel", "{actor} a démarré un appel vidéo", "Appel vidéo terminé",
               "{actor} a manqué votre appel", "{actor} a manqué votre appel vidéo", "Vous avez manqué un appel",
               "Vous avez manqué un appel de {name}"),
        *_rows(M, "fr", "system", "pin", "template", "cs-fr-meta2", "{actor} a épinglé un message"),
        *_rows(M, "fr", "system", "rename", "template", "cs-fr-meta2", "{actor} a modifié le nom du groupe{name}"),
        *_rows(M, "fr", "system", "other", "template", "cs-fr-meta2",
               "Vous êtes maintenant connecté sur Messenger", "Vous êtes maintenant connectés sur Messenger"),
        *_rows(M, "en", "system", "other", "template", "cs-fr-meta2", "You are now connected on Messenger"),
        *_rows(M, "nl", "media", "attachment", "template", "cs-fr-meta2", "{actor} heeft een bijlage verstuurd"),
        *_rows(M, "pl", "call", "call", "template", "cs-pl-meta",
               "Rozmowa zakończyła się", "{actor} dołączył do rozmowy", "{actor} dołączyła do rozmowy",
               "{actor} rozpoczął rozmowę", "{actor} rozpoczęła rozmowę"),
        *_rows(M, "pl", "system", "member_leave", "template", "cs-pl-meta",
               "{actor} opuścił(a) grupę", "{actor} usunął użytkownika{name}", "{actor} usunęła użytkownika{name}"),
        *_rows(M, "pl", "system", "rename", "template", "cs-pl-meta",
               "{actor} ustawił nick użytkownika{name}", "Nadałeś(aś) grupie nazwę{name}"),
        *_rows(M, "pl", "system", "settings", "template", "cs-pl-meta",
               "{actor} zmienił motyw", "{actor} {name} szybką reakcję jako {name}"),
        *_rows(M, "pl", "call", "call", "template", "cs-pl-meta",
               "Masz nieodebrane połączenie{name}"),
        *_rows(M, "pl", "system", "other", "template", "cs-pl-meta",
               "{actor} {name} jako administratora grupy", "{name} innych użytkowników jesteście teraz administratorami"),
        *_rows(M, "pl", "media", "attachment", "template", "cs-pl-fb-html",
               "{actor} wysłał załącznik", "Wysłałeś(aś) załącznik", "{actor} wysłał link", "Wysłałeś(aś) link"),
        *_rows(M, "pl", "media", "attachment", "template", "cs-pl-fb-json",
               "{actor} wysłała załącznik", "{actor} przesyła załącznik"),
        *_rows(M, "pl", "system", "rename", "template", "cs-pl-fb-json",
               "{actor} ustawił pseudonim{name}", "{actor} ustawiła pseudonim{name}"),
        *_rows(M, "pl", "system", "settings", "template", "cs-pl-fb-json",
               "{actor} zmienił kolor czatu", "{actor} zmieniła kolor czatu", "{actor} zmienił kolor czatu{name}",
               "{actor} zmieniła kolor czatu{name}"),
        *_rows(M, "pl", "system", "member_join", "template", "cs-pl-fb-html", "{actor} dodał {name} do grupy"),
        *_rows(M, "pl", "system", "member_leave", "template", "cs-pl-fb-html",
               "{actor} usunął członka grupy", "{actor} usunął(ęła) Ciebie z grupy", "Opuściłeś(aś) grupę"),
        *_rows(M, "pl", "system", "rename", "template", "cs-pl-fb-html", "{actor} nadał(a) nazwę grupy {name}"),
        *_rows(M, "pl", "system", "other", "template", "cs-pl-fb-html",
               "{actor} utworzył plan", "{actor} zmienił godzinę planu na {name}",
               "{actor} zmienił lokalizację planu na {name}", "{actor} nazwał plan: {name}",
               "Utworzyłeś przypomnienie: {name}", "Twoja odpowiedź na wydarzenie {name}",
               "Odpowiedź {name} na wydarzenie {name}"),
        *_rows(M, "en", "system", "deleted", "template", "meta-en", "{actor} unsent a message"),
        *_rows(M, "en", "system", "member_leave", "template", "meta-en",
               "{actor} left the group", "{actor} removed {name} from the group"),
        *_rows(M, "en", "system", "member_join", "template", "meta-en", "{actor} added {name} to the group"),
        *_rows(M, "en", "system", "rename", "template", "meta-en",
               "{actor} named the group {name}", "{actor} changed the group photo", "{actor} changed the group name{name}",
               "{actor} set the nickname{name}", "{actor} set your nickname{name}", "{actor} set his nickname{name}",
               "{actor} set her nickname{name}", "{actor} set their nickname{name}", "{actor} set his own nickname{name}",
               "{actor} set her own nickname{name}", "{actor} set their own nickname{name}",
               "{actor} set own nickname{name}"),
        *_rows(M, "en", "system", "settings", "template", "meta-en",
               "{actor} set the emoji to {name}", "{actor} set the quick reaction to {name}",
               "{actor} changed the theme{name}", "{actor} changed the chat theme{name}", "{actor} created the group",
               "{actor} turned on {name}", "{actor} turned off {name}"),
        *_rows(M, "en", "system", "pin", "template", "meta-en", "{actor} pinned a message"),
        *_rows(M, "en", "system", "poll", "template", "formats",
               "{actor} created a poll: {name}", "{actor} voted for {name} in the poll{name}"),
        *_rows(M, "en", "call", "call", "template", "meta-en",
               "{actor} called you", "{actor} called {name}", "{actor} missed your call", "{actor} missed your video call",
               "{actor} missed a call{name}", "{actor} missed a video call{name}", "{actor} started a call",
               "{actor} started a video call", "{actor} joined the call", "{actor} joined the video call",
               "{actor} started a video chat", "The chat ended", "The video chat ended", "The call ended",
               "The video call ended", "You missed a call from {name}", "You missed a video call from {name}"),
    ]
)  # fmt: skip

# --- Telegram Desktop JSON: service `action` identifiers ([tdesktop]) ------------------------------------
TELEGRAM_ACTIONS: dict[str, Subkind] = {
    "create_group": "settings", "create_channel": "settings", "migrate_to_supergroup": "settings",
    "migrate_from_group": "settings", "set_messages_ttl": "settings", "edit_chat_theme": "settings",
    "set_chat_wallpaper": "settings", "set_same_chat_wallpaper": "settings", "clear_history": "settings",
    "invite_members": "member_join", "join_group_by_link": "member_join", "join_group_by_request": "member_join",
    "contact_sign_up": "member_join",
    "remove_members": "member_leave",
    "edit_group_title": "rename", "edit_group_photo": "rename", "delete_group_photo": "rename",
    "topic_created": "rename", "topic_edit": "rename",
    "pin_message": "pin",
    "phone_call": "call", "group_call": "call", "invite_to_group_call": "call", "group_call_scheduled": "call",
}  # fmt: skip


# --- matching ----------------------------------------------------------------------------------------------

PLACEHOLDERS = ("{name}", "{actor}")
MAX_NOTICE_CHARS = 400  # longer texts are never checked: every notice here is short


def normalize(text: str) -> str:
    """How a text and a row are compared: lower-cased, outer spaces and one trailing "." removed."""
    text = text.strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def template_pieces(template: str) -> tuple[str, ...]:
    """The literal pieces around the placeholders: "{name} left" -> ("", " left")."""
    pieces: list[str] = []
    rest = normalize(template).replace("{actor}", "{name}")
    while True:
        start = rest.find("{name}")
        if start < 0:
            pieces.append(rest)
            return tuple(pieces)
        pieces.append(rest[:start])
        rest = rest[start + len("{name}") :]


def match_pieces(pieces: tuple[str, ...], text: str) -> list[str] | None:
    """The placeholder values when `text` (normalized) is the template of `pieces`, else None.

    The first piece anchors the start, the last the end, the ones between are found left to right: one
    scan of the text per piece, so linear in the text for a fixed template."""
    first, last = pieces[0], pieces[-1]
    if len(pieces) == 1:
        return [] if text == first else None
    if not text.startswith(first) or not text.endswith(last) or len(text) < len(first) + len(last):
        return None
    end = len(text) - len(last)
    position = len(first)
    values: list[str] = []
    for piece in pieces[1:-1]:
        found = text.find(piece, position, end) if piece else position
        if found < 0:
            return None
        values.append(text[position:found])
        position = found + len(piece)
    values.append(text[position:end])
    if any(not value.strip() for value in values):
        return None
    return values


@dataclass(frozen=True, slots=True)
class PhraseMatcher:
    """The rows of one table, compiled for lookup: exact texts in a dict, prefixes, suffixes and templates."""

    exact: dict[str, Phrase]
    prefixes: tuple[tuple[str, Phrase], ...]
    suffixes: tuple[tuple[str, Phrase], ...]
    templates: tuple[tuple[tuple[str, ...], Phrase], ...]
    templates_without_actor: tuple[tuple[tuple[str, ...], Phrase], ...]

    @classmethod
    def build(cls, rows: tuple[Phrase, ...]) -> PhraseMatcher:
        exact: dict[str, Phrase] = {}
        prefixes: list[tuple[str, Phrase]] = []
        suffixes: list[tuple[str, Phrase]] = []
        templates: list[tuple[tuple[str, ...], Phrase]] = []
        for row in rows:
            if row.rule == "exact":
                exact.setdefault(normalize(row.text), row)
            elif row.rule == "prefix":
                prefixes.append((row.text.lower(), row))
            elif row.rule == "suffix":
                suffixes.append((row.text.lower(), row))
            else:
                templates.append((template_pieces(row.text), row))
        without_actor = tuple(
            template for template in templates if not template[1].text.startswith("{actor}")
        )
        return cls(exact, tuple(prefixes), tuple(suffixes), tuple(templates), without_actor)

    def find(self, text: str) -> Phrase | None:
        """The row `text` is (exact, prefix or suffix rows; templates: see `find_template`)."""
        if len(text) > MAX_NOTICE_CHARS and not self.prefixes:
            return None
        lowered = text[:MAX_NOTICE_CHARS].lower()
        if len(text) <= MAX_NOTICE_CHARS:
            row = self.exact.get(normalize(lowered))
            if row is not None:
                return row
            for suffix, row in self.suffixes:
                if lowered.endswith(suffix):
                    return row
        for prefix, row in self.prefixes:
            if lowered.startswith(prefix):
                return row
        return None

    def find_template(self, text: str, actors: frozenset[str] = frozenset()) -> Phrase | None:
        """The template row `text` fills. Templates starting with `{actor}` need one of `actors` (lower
        case) there; without `actors` any name does."""
        if len(text) > MAX_NOTICE_CHARS:
            return None
        normalized = normalize(text)
        # the text after an actor's name, which the rest of an `{actor}` template must fill from its start
        after_actor = [normalized[len(actor) :] for actor in actors if normalized.startswith(actor)]
        # most texts start with no actor: the `{actor}` templates cannot match them
        templates = self.templates if after_actor or not actors else self.templates_without_actor
        for pieces, row in templates:
            if actors and row.text.startswith("{actor}"):
                if any(match_pieces(pieces[1:], rest) is not None for rest in after_actor):
                    return row
            elif match_pieces(pieces, normalized) is not None:
                return row
        return None


WHATSAPP_BODY_MATCHER = PhraseMatcher.build(WHATSAPP_BODIES)
WHATSAPP_NOTICE_MATCHER = PhraseMatcher.build(WHATSAPP_NOTICES)
# the notices that can quote a group's name (subject changed, group created): a name may hold ": "
WHATSAPP_GROUP_NAME_MATCHER = PhraseMatcher.build(
    tuple(row for row in WHATSAPP_NOTICES if row.subkind in ("rename", "settings"))
)
META_MATCHER = PhraseMatcher.build(META_NOTICES)
ALL_PHRASES: tuple[Phrase, ...] = (*WHATSAPP_BODIES, *WHATSAPP_NOTICES, *META_NOTICES)

// The conversation browser: a small script over the service's JSON API.
// Everything a user or the API wrote is inserted with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "conversations.token";
const PAGE = 30;
const MESSAGES_PAGE = 50;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  cursor: null,
  listDone: false,
  listLoading: false,
  current: null, // a conversation id, "draft" for a new one, or null
  earliestSeq: null,
};

class AuthError extends Error {}
class Unavailable extends Error {}

// ------------------------------------------------------------------ messages to the user

function announce(text) {
  $("status").textContent = text;
}

function showBanner(text, kind = "error") {
  const banner = $("banner");
  banner.textContent = text;
  banner.className = kind === "info" ? "banner info" : "banner";
  banner.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
function relativeTime(iso) {
  const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
  const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600],
                 ["minute", 60]];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

function timeElement(iso, relativeText = true) {
  const date = new Date(iso);
  return el("time", { datetime: iso, title: date.toLocaleString(),
                      text: relativeText ? relativeTime(iso) : date.toLocaleString() });
}

// ------------------------------------------------------------------ the API

async function api(method, path, body, { retry = method === "GET", unavailable = null } = {}) {
  let delay = 2;
  for (;;) {
    let response;
    const token = state.token;
    try {
      response = await fetch(path, {
        method,
        headers: { "Authorization": `Bearer ${token || ""}`, "Accept": "application/json",
                   ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (!retry) throw new Unavailable("The service cannot be reached.");
      showBanner(`The service cannot be reached. Retrying in ${delay} s…`, "info");
      await sleep(delay * 1000);
      delay = Math.min(delay * 2, 30);
      continue;
    }
    if (response.status === 401) {
      if (state.token && state.token !== token) continue; // a new token arrived meanwhile: use it
      askForToken("The token was refused. Enter the API token again.");
      throw new AuthError("unauthorized");
    }
    if (response.status === 503) {
      const wait = Number(response.headers.get("Retry-After")) || delay;
      if (!retry) {
        showBanner(unavailable || "The database is unavailable, so nothing was saved. Try again in a few seconds.");
        throw new Unavailable("database unavailable");
      }
      showBanner(`The database is unavailable. Retrying in ${wait} s…`, "info");
      await sleep(wait * 1000);
      delay = Math.min(delay * 2, 30);
      continue;
    }
    hideBanner();
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const message = (data && data.message) || `The request failed (HTTP ${response.status}).`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function report(error) {
  if (error instanceof AuthError || error instanceof Unavailable) return;
  showBanner(error.message || String(error));
}

// ------------------------------------------------------------------ token

function askForToken(reason) {
  const dialog = $("token-dialog");
  $("token-reason").textContent = reason;
  $("token-input").value = "";
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

$("token-form").addEventListener("submit", () => {
  const token = $("token-input").value.trim();
  if (!token) return;
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  reloadList();
  if (state.current && state.current !== "draft") openConversation(state.current);
});

$("token-dialog").addEventListener("close", () => {
  if (!state.token) showBanner("An API token is needed to see conversations. Use \"Change token\" to enter it.");
});

$("change-token").addEventListener("click", () => askForToken("Enter the API token."));

// ------------------------------------------------------------------ conversation list

function conversationItem(conversation) {
  const title = conversation.title || "Untitled conversation";
  const count = conversation.message_count;
  const button = el("button", { type: "button", "data-id": conversation.conversation_id },
    el("span", { class: "item-title", text: title }),
    el("span", { class: "item-meta" }, `${count} message${count === 1 ? "" : "s"} · `,
       timeElement(conversation.updated_at)));
  button.addEventListener("click", () => openConversation(conversation.conversation_id));
  if (conversation.conversation_id === state.current) button.setAttribute("aria-current", "true");
  return el("li", { "data-id": conversation.conversation_id }, button);
}

function updateListState() {
  const empty = $("conversation-list").children.length === 0;
  $("list-empty").hidden = !(empty && state.listDone);
  $("list-loading").hidden = !state.listLoading;
  $("conversation-list").setAttribute("aria-busy", String(state.listLoading));
}

async function loadMore() {
  if (state.listLoading || state.listDone || !state.token) return;
  state.listLoading = true;
  updateListState();
  const generation = listGeneration;
  try {
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (state.cursor) params.set("cursor", state.cursor);
    const page = await api("GET", `/conversations?${params}`);
    if (generation !== listGeneration) return;
    const list = $("conversation-list");
    for (const item of page.items) {
      if (!list.querySelector(`li[data-id="${CSS.escape(item.conversation_id)}"]`)) list.append(conversationItem(item));
    }
    state.cursor = page.next_cursor;
    state.listDone = !page.next_cursor;
    announce(`${list.children.length} conversations loaded`);
  } catch (error) {
    if (generation === listGeneration) report(error);
    return; // no retry loop on errors: a new token or a reload starts again
  } finally {
    if (generation === listGeneration) {
      state.listLoading = false;
      updateListState();
    }
  }
  // Keep filling while the sentinel is still on screen (tall windows, short pages).
  if (!state.listDone && sentinelVisible) loadMore();
}

let listGeneration = 0;
function reloadList() {
  listGeneration += 1;
  $("conversation-list").replaceChildren();
  state.cursor = null;
  state.listDone = false;
  state.listLoading = false; // a page still in flight belongs to the old list and is dropped
  loadMore();
}

let sentinelVisible = false;
new IntersectionObserver((entries) => {
  sentinelVisible = entries.some((entry) => entry.isIntersecting);
  if (sentinelVisible) loadMore();
}, { root: null, rootMargin: "200px" }).observe($("list-sentinel"));

function upsertListItem(conversation) {
  const list = $("conversation-list");
  const existing = list.querySelector(`li[data-id="${CSS.escape(conversation.conversation_id)}"]`);
  if (existing) existing.remove();
  list.prepend(conversationItem(conversation));
  updateListState();
}

function markCurrent() {
  for (const button of document.querySelectorAll(".list button[data-id]")) {
    if (button.dataset.id === state.current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

// ------------------------------------------------------------------ one conversation

function messageItem(message) {
  return el("li", { class: `message ${message.role}`, "data-seq": String(message.seq), tabindex: "-1" },
    el("header", {}, el("span", { class: "role", text: message.role }), timeElement(message.created_at, false)),
    el("pre", { class: "content", text: message.content }));
}

function showConversationPane(title) {
  $("placeholder").hidden = true;
  $("conversation").hidden = false;
  $("composer").hidden = false;
  $("conversation-title").textContent = title;
}

async function openConversation(id, { focusSeq = null } = {}) {
  state.current = id;
  markCurrent();
  collapseSidebarOnNarrow();
  const messages = $("messages");
  messages.setAttribute("aria-busy", "true");
  showConversationPane("Loading…");
  try {
    const conversation = await api("GET", `/conversations/${encodeURIComponent(id)}?messages_limit=${MESSAGES_PAGE}`);
    if (state.current !== id) return;
    showConversationPane(conversation.title || "Untitled conversation");
    $("delete-conversation").hidden = false;
    messages.replaceChildren(...conversation.messages.map(messageItem));
    state.earliestSeq = conversation.messages.length ? conversation.messages[0].seq : null;
    $("load-earlier").hidden = !(state.earliestSeq && state.earliestSeq > 1);
    $("messages-empty").hidden = conversation.messages.length > 0;
    const target = focusSeq && messages.querySelector(`[data-seq="${focusSeq}"]`);
    if (target) {
      target.scrollIntoView({ block: "center" });
      target.focus();
    } else {
      messages.lastElementChild?.scrollIntoView({ block: "end" });
      $("conversation-title").focus();
    }
    announce(`Opened ${conversation.title || "conversation"} with ${conversation.message_count} messages`);
  } catch (error) {
    if (error.status === 404) {
      showBanner("That conversation no longer exists.");
      closeConversation();
      reloadList();
    } else {
      report(error);
    }
  } finally {
    messages.setAttribute("aria-busy", "false");
  }
}

$("load-earlier").addEventListener("click", async () => {
  const id = state.current;
  if (!id || !state.earliestSeq) return;
  const pane = $("conversation");
  const before = pane.scrollHeight;
  try {
    const page = await api("GET",
      `/conversations/${encodeURIComponent(id)}/messages?before=${state.earliestSeq}&limit=${MESSAGES_PAGE}`);
    if (state.current !== id) return;
    $("messages").prepend(...page.items.map(messageItem));
    state.earliestSeq = page.items.length ? page.items[0].seq : state.earliestSeq;
    $("load-earlier").hidden = !page.next_cursor;
    pane.scrollTop += pane.scrollHeight - before; // keep the reader's place
    announce(`${page.items.length} earlier messages loaded`);
  } catch (error) {
    report(error);
  }
});

function closeConversation() {
  state.current = null;
  $("conversation").hidden = true;
  $("composer").hidden = true;
  $("placeholder").hidden = false;
  markCurrent();
}

$("new-conversation").addEventListener("click", () => {
  state.current = "draft";
  markCurrent();
  collapseSidebarOnNarrow();
  showConversationPane("New conversation");
  $("delete-conversation").hidden = true;
  $("load-earlier").hidden = true;
  $("messages").replaceChildren();
  $("messages-empty").hidden = false;
  $("composer-input").focus();
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("composer-input");
  const content = input.value;
  if (!content.trim()) return;
  const role = $("composer-role").value;
  const send = $("composer").querySelector("button[type=submit]");
  send.disabled = true;
  try {
    if (state.current === "draft") {
      const created = await api("POST", "/conversations", { messages: [{ role, content }] }, { retry: false });
      input.value = "";
      upsertListItem(created);
      await openConversation(created.conversation_id);
    } else {
      const id = state.current;
      const message = await api("POST", `/conversations/${encodeURIComponent(id)}/messages`, { role, content },
        { retry: false });
      input.value = "";
      if (state.current === id) {
        $("messages").append(messageItem(message));
        $("messages-empty").hidden = true;
        $("messages").lastElementChild.scrollIntoView({ block: "end" });
      }
      const fresh = await api("GET", `/conversations/${encodeURIComponent(id)}?messages_limit=0`);
      upsertListItem(fresh);
      if (state.current === id) $("conversation-title").textContent = fresh.title || "Untitled conversation";
    }
    announce("Message sent");
  } catch (error) {
    report(error); // the text stays in the box, so nothing typed is lost
  } finally {
    send.disabled = false;
    input.focus();
  }
});

$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("delete-conversation").addEventListener("click", () => {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent =
    `"${$("conversation-title").textContent}" and all its messages will be removed for good.`;
  dialog.returnValue = "";
  dialog.showModal();
  dialog.querySelector("button[value=cancel]").focus();
});

$("confirm-dialog").addEventListener("close", async () => {
  if ($("confirm-dialog").returnValue !== "delete" || !state.current || state.current === "draft") return;
  const id = state.current;
  try {
    await api("DELETE", `/conversations/${encodeURIComponent(id)}`, undefined, { retry: false });
    $("conversation-list").querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
    closeConversation();
    updateListState();
    announce("Conversation deleted");
    $("new-conversation").focus();
  } catch (error) {
    report(error);
  }
});

// ------------------------------------------------------------------ search

function unescapeHtml(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#x27;/g, "'")
    .replace(/&amp;/g, "&");
}

function snippetNode(snippet) {
  // The API sends escaped HTML whose only tags are <b>…</b> around matches; build <mark>
  // elements from its text, never parse it as HTML.
  const node = el("span", { class: "snippet" });
  const parts = snippet.split(/<b>|<\/b>/).map(unescapeHtml);
  parts.forEach((part, index) => node.append(index % 2 ? el("mark", { text: part }) : document.createTextNode(part)));
  return node;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search-input").value.trim();
  if (!q) return;
  const list = $("search-list");
  list.replaceChildren(el("li", { class: "muted", text: "Searching…" }));
  $("search-results").hidden = false;
  try {
    // A search is never retried by itself: a broad one stopped by its time limit would only
    // be stopped again; the message says what to do instead.
    const result = await api("GET", `/search?${new URLSearchParams({ q, limit: "20" })}`,
      undefined, { retry: false, unavailable: "The database is unavailable. Search again in a few seconds." });
    list.replaceChildren(...result.items.map((hit) => {
      const button = el("button", { type: "button", "data-id": hit.conversation_id },
        snippetNode(hit.snippet),
        el("span", { class: "item-meta" }, `${hit.role} in "${hit.title || "Untitled conversation"}" · `,
           timeElement(hit.created_at)));
      button.addEventListener("click", () => openConversation(hit.conversation_id, { focusSeq: hit.seq }));
      return el("li", {}, button);
    }));
    if (!result.items.length) list.replaceChildren(el("li", { class: "muted", text: "No messages match." }));
    announce(`${result.items.length} results`);
  } catch (error) {
    if (error.status === 422) {
      // search_timeout (too broad) or invalid_search ('-word' alone): say so where the results go.
      list.replaceChildren(el("li", { class: "muted", text: error.message }));
      announce(error.message);
      return;
    }
    list.replaceChildren();
    report(error);
  }
});

$("clear-search").addEventListener("click", () => {
  $("search-results").hidden = true;
  $("search-list").replaceChildren();
  $("search-input").value = "";
  $("search-input").focus();
});

// ------------------------------------------------------------------ narrow screens

const narrow = window.matchMedia("(max-width: 720px)");
function collapseSidebarOnNarrow() {
  if (!narrow.matches) return;
  $("sidebar").classList.add("collapsed");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}
$("toggle-sidebar").addEventListener("click", () => {
  const collapsed = $("sidebar").classList.toggle("collapsed");
  $("toggle-sidebar").setAttribute("aria-expanded", String(!collapsed));
});

// ------------------------------------------------------------------ start

if (state.token) reloadList();
else askForToken("Enter the API token to read and write conversations. It stays in this browser tab only.");

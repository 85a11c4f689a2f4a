// SPDX-License-Identifier: MIT
// HttpClient: one connection's worth of HTTP(S) requests through libcurl, for the trackers that speak a REST API.
#pragma once

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <curl/curl.h>

namespace torchtrain::detail {

struct HttpResponse {
  long status = 0;
  std::string body;
};

struct HttpSettings {
  long timeout_seconds = 120;        // the whole request
  long connect_timeout_seconds = 10;
  std::string username, password;    // HTTP basic authentication when both are set
  std::string bearer_token;          // else an Authorization: Bearer header when set
  bool verify_tls = true;
  std::string ca_bundle;             // a certificate file that replaces the system's
};

/// Sends requests one at a time over a kept-alive connection. A transport failure (no route, refused,
/// timed out, TLS, cancelled) throws std::runtime_error with curl's reason; any HTTP status is returned to the
/// caller. One thread makes the requests; cancel() may come from any thread.
class HttpClient {
 public:
  explicit HttpClient(HttpSettings settings) : settings_(std::move(settings)) {
    static std::once_flag global;
    std::call_once(global, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    handle_ = curl_easy_init();
    if (handle_ == nullptr) throw std::runtime_error("libcurl could not start a session (curl_easy_init failed)");
  }
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;
  ~HttpClient() { curl_easy_cleanup(handle_); }

  /// `method` GET (query already in `url`) or POST/PUT/PATCH with `body` of `content_type`.
  HttpResponse request(const std::string& method, const std::string& url, const std::string& body = "",
                       const std::string& content_type = "application/json") {
    HttpResponse response;
    error_[0] = '\0';
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, ("Content-Type: " + content_type).c_str());
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip before a body
    if (!settings_.bearer_token.empty() && (settings_.username.empty() || settings_.password.empty()))
      headers = curl_slist_append(headers, ("Authorization: Bearer " + settings_.bearer_token).c_str());
    curl_easy_setopt(handle_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(handle_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(handle_, CURLOPT_ERRORBUFFER, error_);
    curl_easy_setopt(handle_, CURLOPT_NOPROGRESS, 0L);  // for cancel(): the progress function aborts
    curl_easy_setopt(handle_, CURLOPT_XFERINFOFUNCTION, &HttpClient::progress);
    curl_easy_setopt(handle_, CURLOPT_XFERINFODATA, &cancelled_);
    curl_easy_setopt(handle_, CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM: safe in a thread
    curl_easy_setopt(handle_, CURLOPT_TIMEOUT, settings_.timeout_seconds);
    curl_easy_setopt(handle_, CURLOPT_CONNECTTIMEOUT, settings_.connect_timeout_seconds);
    curl_easy_setopt(handle_, CURLOPT_USERAGENT, "torchtrain");
    curl_easy_setopt(handle_, CURLOPT_WRITEFUNCTION, &HttpClient::collect);
    curl_easy_setopt(handle_, CURLOPT_WRITEDATA, &response.body);
    if (!settings_.username.empty() && !settings_.password.empty()) {
      curl_easy_setopt(handle_, CURLOPT_HTTPAUTH, static_cast<long>(CURLAUTH_BASIC));
      curl_easy_setopt(handle_, CURLOPT_USERNAME, settings_.username.c_str());
      curl_easy_setopt(handle_, CURLOPT_PASSWORD, settings_.password.c_str());
    }
    if (!settings_.verify_tls) {
      curl_easy_setopt(handle_, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(handle_, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!settings_.ca_bundle.empty()) curl_easy_setopt(handle_, CURLOPT_CAINFO, settings_.ca_bundle.c_str());
    if (method == "GET") {
      curl_easy_setopt(handle_, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(handle_, CURLOPT_CUSTOMREQUEST, method.c_str());
      curl_easy_setopt(handle_, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(handle_, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    const CURLcode code = curl_easy_perform(handle_);
    curl_easy_getinfo(handle_, CURLINFO_RESPONSE_CODE, &response.status);
    curl_easy_reset(handle_);  // no option may point at this call's headers and body once it returns
    curl_slist_free_all(headers);
    if (code != CURLE_OK)
      throw std::runtime_error(method + " " + url + ": " + (error_[0] != '\0' ? error_ : curl_easy_strerror(code)));
    return response;
  }

  /// Ends the request in progress, and every later one, at once: the program is shutting the tracker down.
  void cancel() { cancelled_ = true; }

  /// `text` percent-encoded for a query string.
  std::string escape(const std::string& text) {
    char* escaped = curl_easy_escape(handle_, text.data(), static_cast<int>(text.size()));
    std::string result = escaped != nullptr ? escaped : "";
    curl_free(escaped);
    return result;
  }

 private:
  static std::size_t collect(char* data, std::size_t size, std::size_t count, void* body) {
    static_cast<std::string*>(body)->append(data, size * count);
    return size * count;
  }

  static int progress(void* cancelled, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<std::atomic<bool>*>(cancelled)->load() ? 1 : 0;
  }

  HttpSettings settings_;
  CURL* handle_ = nullptr;
  char error_[CURL_ERROR_SIZE] = "";  // curl may write into it until the handle is cleaned up
  std::atomic<bool> cancelled_{false};
};

}  // namespace torchtrain::detail

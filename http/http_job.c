/* Work for a broker loop on behalf of a deferred request; see the "work for
 * a broker loop" part of http_server.h. Only the server's public API. */
#include <stdarg.h>
#include <stdio.h>

#include "common/inbox.h"
#include "http/http_server.h"

static void
job_run(struct inbox_item *item, bool cancelled)
{
    struct http_job *job = (struct http_job *)item;
    if (cancelled)
        http_job_reply_error(job, 503, "shutting_down", "the node is stopping");
    else
        job->run(job);
}

void
http_job_post(struct inbox *inbox, struct http_request *req, struct http_job *job, http_job_fn run,
              http_job_fn destroy)
{
    job->req = http_request_defer(req);
    job->run = run;
    job->destroy = destroy;
    job->item.run = job_run;
    inbox_post(inbox, &job->item);
}

void
http_job_reply_json(struct http_job *job, unsigned status, json_t *body)
{
    struct http_request *req = job->req;
    job->destroy(job);
    http_reply_json(req, status, body);
}

void
http_job_reply_text(struct http_job *job, unsigned status, const char *content_type, char *text,
                    size_t len)
{
    struct http_request *req = job->req;
    job->destroy(job);
    http_reply_text(req, status, content_type, text, len);
}

void
http_job_reply_error(struct http_job *job, unsigned status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    struct http_request *req = job->req;
    job->destroy(job);
    http_reply_error(req, status, code, "%s", message);
}

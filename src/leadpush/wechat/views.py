"""HTTP routes the mini program calls: sign in with wx.login, bind the signed-in user's openid, report subscribe
results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Body, Request
from pydantic import BeforeValidator, Field
from sqlalchemy import select

from leadpush.deps import Ctx, CurrentUser, client_address
from leadpush.errors import ApiError
from leadpush.schemas import CamelModel, Envelope, RequestModel
from leadpush.text import refuse_lone_surrogates
from leadpush.users.models import User
from leadpush.users.schemas import SessionOut, UserOut
from leadpush.users.sessions import session_ends, start_session
from leadpush.wechat import credits
from leadpush.wechat.login import bind_openid, openid_from_code

router = APIRouter(prefix="/api/wechat", tags=["wechat"])
sign_in_router = APIRouter(prefix="/api/auth", tags=["auth"])


class LoginBody(RequestModel):
    code: str = Field(min_length=1, max_length=256, description="wx.login 返回的 code（js_code）")


class BindingOut(CamelModel):
    user_id: int
    openid: str
    changed: bool
    credits: int = Field(description="当前模板剩余的订阅消息次数")


PROMPT_DESCRIPTION = (
    "小程序应提示用户做什么：enable_in_settings = 用户关闭了订阅消息（上次结果为 ban），请引导其到小程序"
    "「设置 → 订阅消息」重新开启；ask_again = 上次拒绝 / 被过滤，或次数已用完，请在用户下次点击时再次调用 "
    "wx.requestSubscribeMessage；null = 无需提示"
)


class SubscriptionOut(CamelModel):
    credits: int = Field(description="该模板剩余次数")
    last_result: Literal["accept", "reject", "ban", "filter"] | None = Field(
        description="wx.requestSubscribeMessage 对该模板的最近一次结果（从未上报为 null）"
    )
    last_result_at: datetime | None = Field(description="最近一次结果的上报时间")
    prompt: Literal["enable_in_settings", "ask_again"] | None = Field(description=PROMPT_DESCRIPTION)
    hint: str | None = Field(description="给用户看的中文提示（prompt 为 null 时为 null）")


class CreditsOut(CamelModel):
    template_id: str | None = Field(description="本部署使用的订阅消息模板")
    credits: int = Field(description="该模板剩余次数：每次 accept 加一，每发送成功一条减一")
    added: int = 0
    templates: dict[str, int] = Field(description="各模板的剩余次数")
    subscriptions: dict[str, SubscriptionOut] = Field(
        description="各模板的次数、最近一次订阅结果与应给用户的提示（总含本部署的模板）"
    )
    prompt: Literal["enable_in_settings", "ask_again"] | None = Field(
        description="本部署模板的提示（同 subscriptions[templateId].prompt）：" + PROMPT_DESCRIPTION
    )
    hint: str | None = Field(description="本部署模板的中文提示文字")


def _subscription_out(state: credits.SubscriptionState) -> SubscriptionOut:
    return SubscriptionOut(
        credits=state.credits,
        last_result=state.last_result,
        last_result_at=state.last_result_at,
        prompt=state.prompt,
        hint=state.hint,
    )


def _credits_out(ctx: Ctx, stored: dict[str, credits.SubscriptionState], added: int = 0) -> CreditsOut:
    """The user's templates as stored, and the deployment's template even when never asked for yet."""
    tid = ctx.settings.wechat_template_id
    states = dict(stored)
    if tid and tid not in states:
        states[tid] = credits.SubscriptionState(tid, 0, None, None)
    subs = {t: _subscription_out(state) for t, state in sorted(states.items())}
    mine = subs.get(tid) if tid else None
    return CreditsOut(
        template_id=tid,
        credits=mine.credits if mine else 0,
        added=added,
        templates={t: state.credits for t, state in stored.items()},
        subscriptions=subs,
        prompt=mine.prompt if mine else None,
        hint=mine.hint if mine else None,
    )


@sign_in_router.post("/miniprogram", response_model=Envelope[SessionOut])
async def miniprogram_sign_in(body: LoginBody, request: Request, ctx: Ctx) -> Envelope:
    """Sign in from the mini program: a wx.login code whose openid is bound to a user starts a session.

    403 `wechat_not_bound` when no user has that openid (an admin binds it, or the person signs in another way
    and calls POST /api/wechat/login); 403 `user_inactive` for a deactivated user.
    """
    address = client_address(request)
    ctx.limiter.refuse_if_over("auth-fail", address, ctx.settings.auth_failures_per_minute)
    openid = await openid_from_code(ctx.settings, body.code)

    def sign_in() -> SessionOut:
        now = ctx.clock.now()
        with ctx.db.write() as session:
            user = session.scalar(select(User).where(User.wechat_openid == openid))
            if user is None:
                ctx.limiter.hit("auth-fail", address)
                raise ApiError(403, "wechat_not_bound", "该微信尚未绑定账号，请联系管理员绑定后再登录")
            if not user.active:
                raise ApiError(403, "user_inactive", "该账号已停用，请联系管理员")
            token = start_session(session, user, via="miniprogram", now=now, settings=ctx.settings, client=address)
            return SessionOut(
                token=token, expires_at=session_ends(now, ctx.settings), user=UserOut.model_validate(user)
            )

    return Envelope(message="登录成功", data=await to_thread.run_sync(sign_in))


@router.post("/login", response_model=Envelope[BindingOut])
async def login(body: LoginBody, ctx: Ctx, user: CurrentUser) -> Envelope:
    """Exchange a mini-program login code for the openid and bind it to the signed-in user."""
    ctx.limiter.check("wechat-login", str(user.id), ctx.settings.token_issues_per_minute)
    openid = await openid_from_code(ctx.settings, body.code)

    def bind() -> BindingOut:
        with ctx.db.write() as session:
            changed = bind_openid(session, user.id, openid, ctx.clock.now())
            templates = credits.credits_of(session, user.id)
        tid = ctx.settings.wechat_template_id or ""
        return BindingOut(user_id=user.id, openid=openid, changed=changed, credits=templates.get(tid, 0))

    out = await to_thread.run_sync(bind)
    return Envelope(message="已绑定微信" if out.changed else "微信已绑定", data=out)


@router.post("/subscriptions", response_model=Envelope[CreditsOut])
def report_subscriptions(
    ctx: Ctx,
    user: CurrentUser,
    result: Annotated[
        dict[str, Any],
        BeforeValidator(refuse_lone_surrogates),
        Body(description="wx.requestSubscribeMessage 的返回结果，原样提交"),
    ],
) -> Envelope:
    """Each `accept` in the result is one message the user agreed to receive on that template.

    Every answer (accept / reject / ban / filter) is kept per template as its `lastResult`; the answer says
    what the mini program should ask of the user (`prompt`, `hint`), as GET does.
    """
    answers = credits.subscribe_answers(result)
    accepted = [tid for tid, answer in answers.items() if answer == "accept"]
    with ctx.db.write() as session:
        credits.record_answers(session, user.id, answers, ctx.clock.now())
        states = credits.subscriptions_of(session, user.id)
    message = f"已记录 {len(accepted)} 次订阅" if accepted else "没有新的订阅次数"
    return Envelope(message=message, data=_credits_out(ctx, states, len(accepted)))


@router.get("/subscriptions", response_model=Envelope[CreditsOut])
def my_credits(ctx: Ctx, user: CurrentUser) -> Envelope:
    """The signed-in user's remaining subscribe-message credits, their last answers and what to prompt."""
    with ctx.db.read() as session:
        states = credits.subscriptions_of(session, user.id)
    return Envelope(data=_credits_out(ctx, states))

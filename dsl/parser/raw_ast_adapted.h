// Boost.Fusion adaptation of the parse tree, so X3 can fill it.
#pragma once

#include <boost/fusion/include/adapt_struct.hpp>

#include "dsl/parser/raw_ast.h"

BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Path, root, fields)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::BinaryTail, op, rhs)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::InTail, op, values)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Compare, lhs, tail)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Negation, kw, operand)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::And, first, rest)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Or, first, rest)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Call, name, args)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Send, kw, template_name, to, intent, via, priority)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::WaitDur, kw, duration)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::WaitUntil, kw, time, days, zone, fallback)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Set, kw, name, value)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::EmitField, name, value)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Emit, kw, event, fields)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Goto, kw, target)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::WaitFor, kw, event, within, when, received, timeout)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::ElseIf, cond, body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::If, cond, body, else_ifs, else_body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Case, values, body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Match, value, cases, else_body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::SplitArm, name, percent, body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Split, kw, arms)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Setting, key, value)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Timezone, zone, fallback)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::QuietHours, start, end)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::OnEvent, event, when)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Reentry, mode, period)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Entry, kw, items)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Exit, kw, on)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Goal, name, on, within, and_exit)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Step, name, body)
BOOST_FUSION_ADAPT_STRUCT(waymark::dsl::raw::Header, kw, name)
